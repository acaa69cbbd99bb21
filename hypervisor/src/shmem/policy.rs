//! One shmem device's naming policy: name validation, the allow/deny restriction list and `subst` prefixes, turning a guest-visible name into a host name.

use alloc::string::String;
use alloc::vec::Vec;

use super::{HostName, MAX_NAME_LEN, Status, glob, is_name_byte};

/// One `allow GLOB` or `deny GLOB` of a restriction list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// True for `allow`, false for `deny`.
    pub allow: bool,
    /// Shell glob matched against the guest-visible name.
    pub glob: String,
}

impl Rule {
    /// `allow GLOB`.
    pub fn allow(glob: &str) -> Rule {
        Rule {
            allow: true,
            glob: String::from(glob),
        }
    }

    /// `deny GLOB`.
    pub fn deny(glob: &str) -> Rule {
        Rule {
            allow: false,
            glob: String::from(glob),
        }
    }
}

/// One `subst OLD,NEW`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subst {
    /// Prefix of the guest-visible name (empty: every name).
    pub old: String,
    /// What replaces it in the host name (may be empty).
    pub new: String,
}

impl Subst {
    /// `subst OLD,NEW`.
    pub fn new(old: &str, new: &str) -> Subst {
        Subst {
            old: String::from(old),
            new: String::from(new),
        }
    }
}

/// Restriction list and substitutions of one shmem device (the configuration's `allow`,
/// `deny` and `subst`, in file order). The default refuses nothing and renames nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
    substs: Vec<Subst>,
    /// Whether any rule is an `allow` (then the list ends with an implicit `deny *`,
    /// otherwise with an implicit `allow *`).
    any_allow: bool,
}

impl Policy {
    /// A policy from the rules and substitutions, each in configuration order.
    pub fn new(rules: Vec<Rule>, substs: Vec<Subst>) -> Policy {
        let any_allow = rules.iter().any(|rule| rule.allow);
        Policy {
            rules,
            substs,
            any_allow,
        }
    }

    /// Guest-visible name → host name: [`validate_name`] ([`Status::IllegalName`]), the
    /// restriction list ([`Status::NoPermission`]), then `subst` ([`Status::IllegalName`] if
    /// the host name would be longer than 31 bytes or empty).
    pub fn resolve(&self, guest_name: &[u8]) -> Result<HostName, Status> {
        validate_name(guest_name)?;
        if !self.permits(guest_name) {
            return Err(Status::NoPermission);
        }
        self.substitute(guest_name)
    }

    /// Whether the restriction list lets the guest use `guest_name`: the first rule whose
    /// glob matches decides; without a match, refused if any rule is an `allow`.
    pub fn permits(&self, guest_name: &[u8]) -> bool {
        self.rules
            .iter()
            .find(|rule| glob::matches(rule.glob.as_bytes(), guest_name))
            .map_or(!self.any_allow, |rule| rule.allow)
    }

    /// The host name of `guest_name` without consulting the restriction list (for the
    /// configuration's `create`s): the first `subst` whose OLD is a prefix replaces it by NEW.
    pub fn substitute(&self, guest_name: &[u8]) -> Result<HostName, Status> {
        validate_name(guest_name)?;
        for subst in &self.substs {
            if let Some(rest) = guest_name.strip_prefix(subst.old.as_bytes()) {
                return HostName::concat(subst.new.as_bytes(), rest);
            }
        }
        HostName::new(guest_name)
    }
}

/// Checks a guest-visible name: 1 to 31 bytes of printable ASCII without `*`, `?` or `[`.
pub fn validate_name(name: &[u8]) -> Result<(), Status> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.iter().all(|&byte| is_name_byte(byte));
    if valid {
        Ok(())
    } else {
        Err(Status::IllegalName)
    }
}

/// The name held in a factory page's name field: the bytes before the first NUL.
/// [`Status::IllegalName`] if the field holds no NUL (the name is unterminated); the name
/// itself is checked by [`Policy::resolve`].
pub fn name_in_field(field: &[u8]) -> Result<&[u8], Status> {
    let end = field
        .iter()
        .position(|&byte| byte == 0)
        .ok_or(Status::IllegalName)?;
    field.get(..end).ok_or(Status::IllegalName)
}
