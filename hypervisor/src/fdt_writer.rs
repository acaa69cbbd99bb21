//! A builder for flattened device trees (DTB format version 17), used to hand guests a tree.
//!
//! Nodes and properties are written in order, the way the structure block lays them out: open
//! a node, give its properties, then its subnodes, close it. Misuse (closing a node that is not
//! open, a property outside a node or after a subnode, a name the specification does not allow,
//! a second root) is an [`FdtError`] at the call that made it, and leaves the tree unchanged.
//! Property names are stored once in the strings block however often they are used.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// The DTB header's magic number.
pub const MAGIC: u32 = 0xd00d_feed;
/// The format version written.
pub const VERSION: u32 = 17;
/// The oldest version the output is backwards compatible with.
pub const LAST_COMPATIBLE_VERSION: u32 = 16;

/// Bytes in the header (version 17: ten 32-bit fields).
const HEADER_SIZE: usize = 40;
const TOKEN_BEGIN_NODE: u32 = 0x1;
const TOKEN_END_NODE: u32 = 0x2;
const TOKEN_PROPERTY: u32 = 0x3;
const TOKEN_END: u32 = 0x9;
/// Longest node or property name the specification allows (characters, before the unit address
/// for nodes).
const MAX_NAME_LENGTH: usize = 31;

/// What went wrong while building a tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FdtError {
    /// `end_node` with no node open.
    NoOpenNode,
    /// A property given while no node is open.
    PropertyOutsideNode,
    /// A property given after a subnode of the same node: the format puts properties first.
    PropertyAfterSubnode,
    /// A node opened after the root node was closed.
    SecondRoot,
    /// The first node opened has a name; the root node's name is empty.
    RootNotFirst,
    /// A node name that is empty, too long or holds characters outside `[0-9a-zA-Z,._+-]`
    /// (plus one `@` before a unit address).
    InvalidNodeName(String),
    /// A property name that is empty, too long or holds characters outside `[0-9a-zA-Z,._+?#-]`.
    InvalidPropertyName(String),
    /// Two subnodes of one node with the same name.
    DuplicateNode(String),
    /// Two properties of one node with the same name.
    DuplicateProperty(String),
    /// A string value holding a NUL byte (it would end the string early).
    NulInString,
    /// `finish` with nodes still open (how many).
    UnclosedNodes(usize),
    /// `finish` without a root node.
    MissingRoot,
    /// The tree or a property would not fit the format's 32-bit sizes and offsets.
    TooLarge,
}

impl fmt::Display for FdtError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdtError::NoOpenNode => write!(formatter, "end_node with no node open"),
            FdtError::PropertyOutsideNode => write!(formatter, "property outside a node"),
            FdtError::PropertyAfterSubnode => write!(formatter, "property after a subnode"),
            FdtError::SecondRoot => write!(formatter, "a second root node"),
            FdtError::RootNotFirst => write!(formatter, "the first node must be the root (\"\")"),
            FdtError::InvalidNodeName(name) => write!(formatter, "invalid node name {name:?}"),
            FdtError::InvalidPropertyName(name) => {
                write!(formatter, "invalid property name {name:?}")
            }
            FdtError::DuplicateNode(name) => write!(formatter, "duplicate node {name:?}"),
            FdtError::DuplicateProperty(name) => write!(formatter, "duplicate property {name:?}"),
            FdtError::NulInString => write!(formatter, "NUL byte inside a string value"),
            FdtError::UnclosedNodes(count) => write!(formatter, "{count} node(s) left open"),
            FdtError::MissingRoot => write!(formatter, "no root node"),
            FdtError::TooLarge => write!(formatter, "tree too large for 32-bit offsets"),
        }
    }
}

/// One node still open.
#[derive(Debug, Default)]
struct OpenNode {
    /// Names of the subnodes written so far.
    subnodes: Vec<String>,
    /// Strings-block offsets of the properties written so far.
    properties: Vec<u32>,
}

/// Builds one device tree blob. See the module documentation for the order of calls.
#[derive(Debug, Default)]
pub struct FdtWriter {
    reservations: Vec<(u64, u64)>,
    structure: Vec<u8>,
    strings: Vec<u8>,
    string_offsets: BTreeMap<String, u32>,
    open: Vec<OpenNode>,
    root_written: bool,
    boot_cpuid_phys: u32,
}

impl FdtWriter {
    /// An empty tree: no root node yet, no memory reservations, boot CPU 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the header's `boot_cpuid_phys` (the `reg` of the CPU that boots).
    pub fn set_boot_cpuid_phys(&mut self, cpu: u32) {
        self.boot_cpuid_phys = cpu;
    }

    /// Adds an entry to the memory reservation block (memory the guest must not use).
    pub fn add_memory_reservation(&mut self, address: u64, size: u64) {
        self.reservations.push((address, size));
    }

    /// Opens a node. The first node must be the root, named `""`; every other name is
    /// `node-name[@unit-address]`.
    pub fn begin_node(&mut self, name: &str) -> Result<(), FdtError> {
        match self.open.last_mut() {
            None => {
                if self.root_written {
                    return Err(FdtError::SecondRoot);
                }
                if !name.is_empty() {
                    return Err(FdtError::RootNotFirst);
                }
                self.root_written = true;
            }
            Some(parent) => {
                if !valid_node_name(name) {
                    return Err(FdtError::InvalidNodeName(String::from(name)));
                }
                if parent.subnodes.iter().any(|sibling| sibling == name) {
                    return Err(FdtError::DuplicateNode(String::from(name)));
                }
                parent.subnodes.push(String::from(name));
            }
        }
        self.push_u32(TOKEN_BEGIN_NODE);
        self.structure.extend_from_slice(name.as_bytes());
        self.structure.push(0);
        self.pad_structure();
        self.open.push(OpenNode::default());
        Ok(())
    }

    /// Closes the innermost open node.
    pub fn end_node(&mut self) -> Result<(), FdtError> {
        if self.open.pop().is_none() {
            return Err(FdtError::NoOpenNode);
        }
        self.push_u32(TOKEN_END_NODE);
        Ok(())
    }

    /// A property with no value (a flag such as `interrupt-controller`).
    pub fn property_empty(&mut self, name: &str) -> Result<(), FdtError> {
        self.property_bytes(name, &[])
    }

    /// A property holding raw bytes.
    pub fn property_bytes(&mut self, name: &str, value: &[u8]) -> Result<(), FdtError> {
        let length = u32::try_from(value.len()).map_err(|_| FdtError::TooLarge)?;
        let node = self.open.last().ok_or(FdtError::PropertyOutsideNode)?;
        if !node.subnodes.is_empty() {
            return Err(FdtError::PropertyAfterSubnode);
        }
        if !valid_property_name(name) {
            return Err(FdtError::InvalidPropertyName(String::from(name)));
        }
        if let Some(offset) = self.string_offsets.get(name)
            && node.properties.contains(offset)
        {
            return Err(FdtError::DuplicateProperty(String::from(name)));
        }
        let name_offset = self.intern(name)?;
        if let Some(node) = self.open.last_mut() {
            node.properties.push(name_offset);
        }
        self.push_u32(TOKEN_PROPERTY);
        self.push_u32(length);
        self.push_u32(name_offset);
        self.structure.extend_from_slice(value);
        self.pad_structure();
        Ok(())
    }

    /// A property holding one 32-bit cell.
    pub fn property_u32(&mut self, name: &str, value: u32) -> Result<(), FdtError> {
        self.property_bytes(name, &value.to_be_bytes())
    }

    /// A property holding one 64-bit value (two cells, most significant first).
    pub fn property_u64(&mut self, name: &str, value: u64) -> Result<(), FdtError> {
        self.property_bytes(name, &value.to_be_bytes())
    }

    /// A property holding a list of 32-bit cells.
    pub fn property_cells(&mut self, name: &str, cells: &[u32]) -> Result<(), FdtError> {
        let bytes: Vec<u8> = cells.iter().flat_map(|cell| cell.to_be_bytes()).collect();
        self.property_bytes(name, &bytes)
    }

    /// A property holding a list of 64-bit values, each as two cells (`reg` with
    /// `#address-cells = <2>` and `#size-cells = <2>`).
    pub fn property_u64_list(&mut self, name: &str, values: &[u64]) -> Result<(), FdtError> {
        let bytes: Vec<u8> = values
            .iter()
            .flat_map(|value| value.to_be_bytes())
            .collect();
        self.property_bytes(name, &bytes)
    }

    /// A property holding one NUL-terminated string.
    pub fn property_string(&mut self, name: &str, value: &str) -> Result<(), FdtError> {
        self.property_strings(name, &[value])
    }

    /// A property holding a string list: each string NUL-terminated, one after the other.
    pub fn property_strings(&mut self, name: &str, values: &[&str]) -> Result<(), FdtError> {
        if values.iter().any(|value| value.as_bytes().contains(&0)) {
            return Err(FdtError::NulInString);
        }
        let mut bytes = Vec::new();
        for value in values {
            bytes.extend_from_slice(value.as_bytes());
            bytes.push(0);
        }
        self.property_bytes(name, &bytes)
    }

    /// Checks that the root was written and every node closed, and lays out the blob:
    /// header, memory reservation block, structure block, strings block.
    pub fn finish(mut self) -> Result<Vec<u8>, FdtError> {
        if !self.open.is_empty() {
            return Err(FdtError::UnclosedNodes(self.open.len()));
        }
        if !self.root_written {
            return Err(FdtError::MissingRoot);
        }
        self.push_u32(TOKEN_END);

        // The reservation block follows the header at an 8-byte boundary (40 already is) and
        // ends with an all-zero entry; the structure block then starts 8-aligned too.
        let reservations_offset = HEADER_SIZE;
        let reservations_size = (self.reservations.len() + 1) * 16;
        let structure_offset = reservations_offset + reservations_size;
        let strings_offset = structure_offset + self.structure.len();
        let total_size = strings_offset + self.strings.len();
        let field = |value: usize| u32::try_from(value).map_err(|_| FdtError::TooLarge);

        let mut blob = Vec::with_capacity(total_size);
        for value in [
            MAGIC,
            field(total_size)?,
            field(structure_offset)?,
            field(strings_offset)?,
            field(reservations_offset)?,
            VERSION,
            LAST_COMPATIBLE_VERSION,
            self.boot_cpuid_phys,
            field(self.strings.len())?,
            field(self.structure.len())?,
        ] {
            blob.extend_from_slice(&value.to_be_bytes());
        }
        for (address, size) in self.reservations.iter().chain(core::iter::once(&(0, 0))) {
            blob.extend_from_slice(&address.to_be_bytes());
            blob.extend_from_slice(&size.to_be_bytes());
        }
        blob.extend_from_slice(&self.structure);
        blob.extend_from_slice(&self.strings);
        Ok(blob)
    }

    /// The strings-block offset of `name`, adding it on first use.
    fn intern(&mut self, name: &str) -> Result<u32, FdtError> {
        if let Some(&offset) = self.string_offsets.get(name) {
            return Ok(offset);
        }
        let offset = u32::try_from(self.strings.len()).map_err(|_| FdtError::TooLarge)?;
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        self.string_offsets.insert(String::from(name), offset);
        Ok(offset)
    }

    fn push_u32(&mut self, value: u32) {
        self.structure.extend_from_slice(&value.to_be_bytes());
    }

    /// Pads the structure block with zeros to the next 4-byte boundary.
    fn pad_structure(&mut self) {
        let padded = self.structure.len().next_multiple_of(4);
        self.structure.resize(padded, 0);
    }
}

/// `node-name[@unit-address]`: a 1-31 character name from `[0-9a-zA-Z,._+-]`, optionally
/// followed by `@` and a non-empty unit address from the same set.
fn valid_node_name(name: &str) -> bool {
    let node_character = |byte: &u8| byte.is_ascii_alphanumeric() || b",._+-".contains(byte);
    let (base, unit_address) = match name.split_once('@') {
        Some((base, unit_address)) => (base, Some(unit_address)),
        None => (name, None),
    };
    let base_valid = !base.is_empty()
        && base.len() <= MAX_NAME_LENGTH
        && base.as_bytes().iter().all(node_character);
    let unit_valid = unit_address.is_none_or(|unit_address| {
        !unit_address.is_empty() && unit_address.as_bytes().iter().all(node_character)
    });
    base_valid && unit_valid
}

/// A 1-31 character name from `[0-9a-zA-Z,._+?#-]`.
fn valid_property_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LENGTH
        && name
            .as_bytes()
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || b",._+?#-".contains(byte))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be32(blob: &[u8], offset: usize) -> u32 {
        u32::from_be_bytes(blob[offset..offset + 4].try_into().unwrap())
    }

    fn small_tree() -> Vec<u8> {
        let mut writer = FdtWriter::new();
        writer.set_boot_cpuid_phys(3);
        writer.add_memory_reservation(0x4000_0000, 0x1000);
        writer.begin_node("").unwrap();
        writer.property_u32("#address-cells", 2).unwrap();
        writer.property_u32("#size-cells", 2).unwrap();
        writer
            .property_strings("compatible", &["a,b", "c"])
            .unwrap();
        writer.begin_node("memory@40000000").unwrap();
        writer.property_string("device_type", "memory").unwrap();
        writer
            .property_u64_list("reg", &[0x4000_0000, 0x100_0000])
            .unwrap();
        writer.end_node().unwrap();
        writer.begin_node("flags").unwrap();
        writer.property_empty("always-on").unwrap();
        writer.property_u64("big", 0x1122_3344_5566_7788).unwrap();
        writer.property_cells("cells", &[1, 2, 3]).unwrap();
        writer.property_bytes("odd", &[0xaa, 0xbb, 0xcc]).unwrap();
        writer.property_string("compatible", "x,y").unwrap();
        writer.end_node().unwrap();
        writer.end_node().unwrap();
        writer.finish().unwrap()
    }

    #[test]
    fn header_fields() {
        let blob = small_tree();
        assert_eq!(be32(&blob, 0), 0xd00d_feed);
        assert_eq!(be32(&blob, 4) as usize, blob.len());
        let structure_offset = be32(&blob, 8) as usize;
        let strings_offset = be32(&blob, 12) as usize;
        assert_eq!(be32(&blob, 16), 40);
        assert_eq!(be32(&blob, 20), 17);
        assert_eq!(be32(&blob, 24), 16);
        assert_eq!(be32(&blob, 28), 3);
        let strings_size = be32(&blob, 32) as usize;
        let structure_size = be32(&blob, 36) as usize;
        // One reservation plus the terminating entry.
        assert_eq!(structure_offset, 40 + 2 * 16);
        assert_eq!(structure_offset % 8, 0);
        assert_eq!(structure_size % 4, 0);
        assert_eq!(strings_offset, structure_offset + structure_size);
        assert_eq!(strings_offset + strings_size, blob.len());
        assert_eq!(be32(&blob, structure_offset), TOKEN_BEGIN_NODE);
        assert_eq!(be32(&blob, strings_offset - 4), TOKEN_END);
        // The reservation entry, then zeros.
        assert_eq!(&blob[40..48], &0x4000_0000u64.to_be_bytes());
        assert_eq!(&blob[48..56], &0x1000u64.to_be_bytes());
        assert!(blob[56..72].iter().all(|&byte| byte == 0));
    }

    #[test]
    fn parses_back_with_the_fdt_crate() {
        let blob = small_tree();
        let tree = fdt::Fdt::new(&blob).unwrap();
        assert_eq!(tree.total_size(), blob.len());
        let root = tree.find_node("/").unwrap();
        let compatible: std::vec::Vec<&str> = root.compatible().unwrap().all().collect();
        assert_eq!(compatible, ["a,b", "c"]);
        let reservations: std::vec::Vec<_> = tree.memory_reservations().collect();
        assert_eq!(reservations.len(), 1);
        assert_eq!(reservations[0].address() as usize, 0x4000_0000);
        assert_eq!(reservations[0].size(), 0x1000);
        let memory = tree.memory();
        let region = memory.regions().next().unwrap();
        assert_eq!(region.starting_address as usize, 0x4000_0000);
        assert_eq!(region.size, Some(0x100_0000));
        let flags = tree.find_node("/flags").unwrap();
        assert_eq!(flags.property("always-on").unwrap().value, &[] as &[u8]);
        assert_eq!(
            flags.property("big").unwrap().as_usize(),
            Some(0x1122_3344_5566_7788)
        );
        assert_eq!(
            flags.property("cells").unwrap().value,
            &[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]
        );
        assert_eq!(flags.property("odd").unwrap().value, &[0xaa, 0xbb, 0xcc]);
        assert_eq!(flags.property("compatible").unwrap().as_str(), Some("x,y"));
    }

    #[test]
    fn strings_block_holds_each_name_once() {
        let blob = small_tree();
        let strings_offset = be32(&blob, 12) as usize;
        let strings_size = be32(&blob, 32) as usize;
        let strings = &blob[strings_offset..strings_offset + strings_size];
        let names: std::vec::Vec<&[u8]> = strings.split(|&byte| byte == 0).collect();
        // Trailing NUL leaves one empty piece at the end.
        assert_eq!(names.last(), Some(&&b""[..]));
        let names = &names[..names.len() - 1];
        let compatible = names.iter().filter(|name| **name == b"compatible").count();
        assert_eq!(compatible, 1);
        let mut sorted = names.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        assert_eq!(names.len(), 9);
    }

    #[test]
    fn minimal_tree_is_an_empty_root() {
        let mut writer = FdtWriter::new();
        writer.begin_node("").unwrap();
        writer.end_node().unwrap();
        let blob = writer.finish().unwrap();
        // Header, one terminating reservation, BEGIN_NODE + "" padded, END_NODE, END.
        assert_eq!(blob.len(), 40 + 16 + 8 + 4 + 4);
        assert_eq!(be32(&blob, 32), 0);
        let tree = fdt::Fdt::new(&blob).unwrap();
        assert_eq!(tree.all_nodes().count(), 1);
    }

    #[test]
    fn node_names_are_padded_to_four_bytes() {
        let mut writer = FdtWriter::new();
        writer.begin_node("").unwrap();
        for name in ["a", "ab", "abc", "abcd", "abcde"] {
            writer.begin_node(name).unwrap();
            writer.property_bytes("v", &[1]).unwrap();
            writer.end_node().unwrap();
        }
        writer.end_node().unwrap();
        let blob = writer.finish().unwrap();
        let tree = fdt::Fdt::new(&blob).unwrap();
        for name in ["a", "ab", "abc", "abcd", "abcde"] {
            let node = tree.find_node(&std::format!("/{name}")).unwrap();
            assert_eq!(node.property("v").unwrap().value, &[1]);
        }
    }

    #[test]
    fn misuse_is_an_error() {
        let mut writer = FdtWriter::new();
        assert_eq!(writer.end_node(), Err(FdtError::NoOpenNode));
        assert_eq!(
            writer.property_u32("x", 1),
            Err(FdtError::PropertyOutsideNode)
        );
        assert_eq!(writer.begin_node("cpus"), Err(FdtError::RootNotFirst));
        writer.begin_node("").unwrap();
        assert_eq!(
            writer.begin_node("bad\0name"),
            Err(FdtError::InvalidNodeName("bad\0name".into()))
        );
        for bad in ["", "a/b", "@1", "a@", "a b", "a@1@2"] {
            assert!(
                matches!(writer.begin_node(bad), Err(FdtError::InvalidNodeName(_))),
                "{bad:?}"
            );
        }
        for bad in [
            "",
            "bad\0name",
            "a b",
            "averyveryveryveryverylongpropertyname",
        ] {
            assert!(
                matches!(
                    writer.property_u32(bad, 1),
                    Err(FdtError::InvalidPropertyName(_))
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            writer.property_string("bootargs", "a\0b"),
            Err(FdtError::NulInString)
        );
        writer.property_u32("x", 1).unwrap();
        assert_eq!(
            writer.property_u32("x", 2),
            Err(FdtError::DuplicateProperty("x".into()))
        );
        writer.begin_node("child@1").unwrap();
        // The same name on a different node is fine.
        writer.property_u32("x", 3).unwrap();
        writer.end_node().unwrap();
        assert_eq!(
            writer.begin_node("child@1"),
            Err(FdtError::DuplicateNode("child@1".into()))
        );
        assert_eq!(
            writer.property_u32("y", 1),
            Err(FdtError::PropertyAfterSubnode)
        );
        writer.end_node().unwrap();
        assert_eq!(writer.end_node(), Err(FdtError::NoOpenNode));
        assert_eq!(writer.begin_node(""), Err(FdtError::SecondRoot));
        // Errors left the tree intact.
        let blob = writer.finish().unwrap();
        let tree = fdt::Fdt::new(&blob).unwrap();
        let root = tree.find_node("/").unwrap();
        assert_eq!(root.properties().count(), 1);
        assert_eq!(root.property("x").unwrap().as_usize(), Some(1));
        assert_eq!(root.children().count(), 1);
    }

    #[test]
    fn finish_checks_balance_and_root() {
        assert_eq!(FdtWriter::new().finish(), Err(FdtError::MissingRoot));
        let mut writer = FdtWriter::new();
        writer.begin_node("").unwrap();
        writer.begin_node("open").unwrap();
        assert_eq!(writer.finish(), Err(FdtError::UnclosedNodes(2)));
    }
}
