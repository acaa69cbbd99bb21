//! Unit tests of the VM-file parser: every form and every syntax error.

use super::*;

fn parse(text: &str) -> Result<VmFile, Errors> {
    parse_vm(Path::new("vm.qvmconf"), text)
}

/// A minimal valid VM file followed by `extra`.
fn with(extra: &str) -> String {
    format!("system test\nram 64M\ncpu\nload guest.img\n{extra}")
}

/// The errors of `text` as `line: message` strings.
fn errors(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(vm) => panic!("expected errors, parsed {vm:?}"),
        Err(errors) => errors
            .iter()
            .map(|d| format!("{}: {}", d.line, d.message))
            .collect(),
    }
}

/// Asserts `text` fails with exactly one error, at `line`, containing `needle`.
#[track_caller]
fn assert_error(text: &str, line: u32, needle: &str) {
    let found = errors(text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].starts_with(&format!("{line}: ")), "{found:#?}");
    assert!(
        found[0].contains(needle),
        "expected `{needle}` in {found:#?}"
    );
}

fn vdevs(text: &str) -> Vec<VdevSpec> {
    parse(&with(text)).unwrap().vdevs
}

fn at(line: u32) -> Location {
    Location::new("vm.qvmconf", line)
}

#[test]
fn design_sketch_parses() {
    let text = "\
# guests/pingpong/ping.qvmconf
system ping
ram 0x40000000,64M          # guest-physical base, size
cpu runmask 1               # one vCPU pinned to physical CPU 1
load guests/pingpong/ping   # image built by xtask
vdev pl011 loc 0x09000000   # virtual console
vdev shmem
    create TEST1,0x100000
    allow test*
vdev shmem loc 0x10000000 intr gic:40
vdev ivshmem-doorbell name pingpong size 1M vectors 2
";
    let vm = parse(text).unwrap();
    assert_eq!(vm.name, Spanned::new("ping".to_string(), at(2)));
    assert_eq!(
        vm.ram,
        [RamSpec {
            guest_base: Some(0x4000_0000),
            size: 64 << 20,
            host_base: None,
            at: at(3)
        }]
    );
    assert_eq!(
        vm.cpus,
        [CpuSpec {
            runmask: Some(1),
            at: at(4)
        }]
    );
    assert_eq!(
        vm.load,
        Spanned::new("guests/pingpong/ping".to_string(), at(5))
    );
    assert_eq!(vm.fault_policy, FaultPolicy::Stop);
    assert_eq!(vm.vdevs.len(), 4);
    assert_eq!(
        vm.vdevs[0],
        VdevSpec::Pl011 {
            loc: Some(Spanned::new(0x0900_0000, at(6))),
            intr: None,
            at: at(6)
        }
    );
    let VdevSpec::Shmem(shmem) = &vm.vdevs[1] else {
        panic!("{:?}", vm.vdevs[1])
    };
    assert_eq!(
        shmem.creates,
        [Create {
            name: "TEST1".into(),
            host_name: "TEST1".into(),
            size: 0x10_0000,
            at: at(8)
        }]
    );
    assert_eq!(
        shmem.rules,
        [Rule {
            allow: true,
            glob: "test*".into(),
            at: at(9)
        }]
    );
    assert_eq!(shmem.mmio, None);
    assert_eq!(shmem.at, at(7));
    let VdevSpec::Shmem(mmio) = &vm.vdevs[2] else {
        panic!("{:?}", vm.vdevs[2])
    };
    let mmio = mmio.mmio.as_ref().unwrap();
    assert_eq!(mmio.base.value, 0x1000_0000);
    assert_eq!(
        mmio.intr,
        Interrupt {
            controller: "gic".into(),
            number: 40,
            at: at(10)
        }
    );
    let VdevSpec::Ivshmem(ivshmem) = &vm.vdevs[3] else {
        panic!("{:?}", vm.vdevs[3])
    };
    assert_eq!(ivshmem.name.value, "pingpong");
    assert_eq!(ivshmem.size.value, 1 << 20);
    assert_eq!(ivshmem.doorbell_vectors, Some(2));
}

#[test]
fn qnx_cluster_example_parses() {
    // The QNX seed's example, minus the vdevs Bulkhead does not provide.
    let text = "\
system cluster
ram 1024M
cpu
cpu
load /emmc/QNX_cluster.ifs
vdev ioapic
        loc 0xf8000000
        intr apic
        name myioapic
vdev ser8250
        intr myioapic:4
vdev shmem
";
    let vm = parse(text).unwrap();
    assert_eq!(vm.cpus.len(), 2);
    assert!(vm.cpus.iter().all(|cpu| cpu.runmask.is_none()));
    assert_eq!(
        vm.vdevs[0],
        VdevSpec::IoApic {
            loc: Some(Spanned::new(0xf800_0000, at(7))),
            parent: Spanned::new("apic".into(), at(8)),
            name: Spanned::new("myioapic".into(), at(9)),
            at: at(6),
        }
    );
    assert_eq!(
        vm.vdevs[1],
        VdevSpec::Uart8250 {
            loc: None,
            intr: Some(Interrupt {
                controller: "myioapic".into(),
                number: 4,
                at: at(11)
            }),
            at: at(10),
        }
    );
    assert!(matches!(&vm.vdevs[2], VdevSpec::Shmem(shmem) if shmem.creates.is_empty()));
}

#[test]
fn ram_forms() {
    let vm =
        parse("system a\nram 1G\nram 0x80000000,0x100000\nram 2M host 0x90000000\ncpu\nload x\n")
            .unwrap();
    let ram: Vec<_> = vm
        .ram
        .iter()
        .map(|r| (r.guest_base, r.size, r.host_base, r.at.line))
        .collect();
    assert_eq!(
        ram,
        [
            (None, 1 << 30, None, 2),
            (Some(0x8000_0000), 0x10_0000, None, 3),
            (None, 2 << 20, Some(0x9000_0000), 4)
        ]
    );
}

#[test]
fn ram_must_be_page_aligned() {
    assert_error(
        &with("ram 0x40000000,0x1800\n"),
        5,
        "ram size 0x1800 is not a multiple of the 4 KiB page size",
    );
    assert_error(
        &with("ram 0x40000800,4K\n"),
        5,
        "ram guest-physical base 0x40000800 is not 4 KiB page-aligned",
    );
    assert_error(
        &with("ram 4K host 0x1234\n"),
        5,
        "ram host-physical base 0x1234 is not 4 KiB page-aligned",
    );
    assert_error(&with("ram 0\n"), 5, "ram size must not be zero");
}

#[test]
fn ram_bad_numbers_and_overflow() {
    assert_error(&with("ram 64X\n"), 5, "ram size: `64X` is not a size");
    assert_error(
        &with("ram 0x4000000g,64M\n"),
        5,
        "ram guest-physical base: `0x4000000g` is not a number",
    );
    assert_error(
        &with("ram 4K host banana\n"),
        5,
        "ram host-physical base: `banana` is not a number",
    );
    assert_error(&with("ram 99999999999G\n"), 5, "too large");
    assert_error(
        &with("ram 0xfffffffffffff000,8K\n"),
        5,
        "overflows the 64-bit address space",
    );
}

#[test]
fn ram_extra_tokens() {
    assert_error(
        &with("ram 4K host\n"),
        5,
        "`host` needs the host-physical base",
    );
    assert_error(
        &with("ram 4K hots 0x1000\n"),
        5,
        "unexpected `hots` in `ram`",
    );
    assert_error(
        &with("ram 4K host 0x1000 0x2000\n"),
        5,
        "unexpected `0x2000` after `host`",
    );
    assert_error(&with("ram\n"), 5, "`ram` needs a value");
}

#[test]
fn cpu_runmask_is_one_cpu() {
    let vm = parse(&with("cpu runmask 3\ncpu runmask 0x2\n")).unwrap();
    let masks: Vec<_> = vm.cpus.iter().map(|cpu| cpu.runmask).collect();
    assert_eq!(masks, [None, Some(3), Some(2)]);
    let pins = "static partitioning pins each vCPU to exactly one physical CPU";
    assert_error(&with("cpu runmask 0,1\n"), 5, pins);
    assert_error(&with("cpu runmask 2-3\n"), 5, pins);
}

#[test]
fn cpu_option_errors() {
    assert_error(
        &with("cpu sched 10\n"),
        5,
        "unknown option `sched` for cpu (options: runmask)",
    );
    assert_error(
        &with("cpu runmask 1 runmask 2\n"),
        5,
        "duplicate `runmask` (first given at line 5)",
    );
    assert_error(&with("cpu runmask one\n"), 5, "`one` is not a number");
    assert_error(
        &with("cpu runmask\n"),
        5,
        "option `runmask` of cpu needs a value",
    );
}

#[test]
fn system_name_rules() {
    assert_error(
        &with("system other\n"),
        5,
        "duplicate `system` (first given at line 1)",
    );
    assert_error(
        "system bad.name\nram 4K\ncpu\nload x\n",
        1,
        "VM name `bad.name` holds `.`",
    );
    let long = "n".repeat(32);
    assert_error(
        &format!("system {long}\nram 4K\ncpu\nload x\n"),
        1,
        "must be 1 to 31 characters",
    );
    assert_error(
        "system\nram 4K\ncpu\nload x\n",
        1,
        "`system` needs a value: `system NAME`",
    );
    assert_error(
        "system a b\nram 4K\ncpu\nload x\n",
        1,
        "unexpected `b` after `system a`",
    );
}

#[test]
fn initrd() {
    assert_eq!(parse(&with("")).unwrap().initrd, None);
    let vm = parse(&with("initrd target/linux/initrd.cpio\n")).unwrap();
    let initrd = vm.initrd.unwrap();
    assert_eq!(initrd.value, "target/linux/initrd.cpio");
    assert_eq!(initrd.at.line, 5);
    assert_error(
        &with("initrd a.cpio\ninitrd b.cpio\n"),
        6,
        "duplicate `initrd` (first given at line 5)",
    );
    assert_error(&with("initrd\n"), 5, "PATH");
    assert_error(&with("initrd a b\n"), 5, "unexpected `b` after `initrd a`");
}

#[test]
fn load_and_fault_policy() {
    assert_error(
        &with("load other.img\n"),
        5,
        "duplicate `load` (first given at line 4)",
    );
    let vm = parse(&with("fault-policy restart\n")).unwrap();
    assert_eq!(vm.fault_policy, FaultPolicy::Restart);
    let vm = parse(&with("fault-policy stop\n")).unwrap();
    assert_eq!(vm.fault_policy, FaultPolicy::Stop);
    assert_error(
        &with("fault-policy reboot\n"),
        5,
        "unknown fault policy `reboot` (policies: stop, restart)",
    );
    assert_error(
        &with("fault-policy stop\nfault-policy stop\n"),
        6,
        "duplicate `fault-policy`",
    );
}

#[test]
fn missing_items_are_all_reported() {
    let found = errors("# nothing here\n");
    assert_eq!(
        found,
        [
            "1: missing `system NAME`",
            "1: missing `load PATH`: a VM needs an image",
            "1: missing `ram [GPA,]SIZE`: a VM needs RAM",
            "1: missing `cpu`: a VM needs at least one vCPU",
        ]
    );
    assert_error("system a\nram 4K\nload x\n", 1, "missing `cpu`");
}

#[test]
fn a_broken_required_item_is_not_also_missing() {
    // `ram` is present but wrong: one error, not a second "missing ram".
    assert_error("system a\nram 4X\ncpu\nload x\n", 2, "is not a size");
    assert_error("system a.b\nram 4K\ncpu\nload x\n", 1, "holds `.`");
    // A second `system` is a duplicate even when the first was wrong.
    let found = errors("system a.b\nram 4K\ncpu\nload x\nsystem c\n");
    assert!(found[1].starts_with("5: duplicate `system`"), "{found:#?}");
}

#[test]
fn unknown_keyword() {
    assert_error(
        &with("memory 64M\n"),
        5,
        "unknown keyword `memory` in a VM file (keywords: system, ram, cpu, load, initrd, cmdline, fault-policy, vdev)",
    );
}

#[test]
fn all_errors_of_a_file_are_collected() {
    let found = errors("system a\nram 4X\ncpu runmask 1,2\nload x\nbogus\nvdev uart\n");
    let lines: Vec<&str> = found.iter().map(|e| e.split(':').next().unwrap()).collect();
    assert_eq!(lines, ["2", "3", "5", "6"], "{found:#?}");
    // Lines after an unknown vdev kind belong to it and are not reported again.
    assert_error(
        &with("vdev uart\n  speed 9600\n"),
        5,
        "unknown vdev kind `uart`",
    );
}

#[test]
fn vdev_kind_errors() {
    assert_error(
        &with("vdev\n"),
        5,
        "`vdev` needs a kind: `vdev KIND` (kinds: pl011, ser8250, ioapic, shmem, ivshmem-plain, ivshmem-doorbell)",
    );
    assert_error(
        &with("vdev virtio-net\n"),
        5,
        "unknown vdev kind `virtio-net` (kinds: pl011, ser8250",
    );
}

#[test]
fn vdev_option_errors_name_the_allowed_options() {
    assert_error(
        &with("vdev pl011 speed 9600\n"),
        5,
        "unknown option `speed` for vdev pl011 (options: loc, intr)",
    );
    assert_error(
        &with("vdev shmem\n  create A,4K\n  size 4K\n"),
        7,
        "unknown option `size` for vdev shmem (options: create, allow, deny, subst, loc, intr)",
    );
    assert_error(
        &with("vdev ivshmem-plain name a size 4K vectors 2\n"),
        5,
        "unknown option `vectors` for vdev ivshmem-plain (options: name, size)",
    );
    assert_error(
        &with("vdev pl011 loc 0x1000 loc 0x2000\n"),
        5,
        "duplicate option `loc` (first given at line 5)",
    );
    let found = errors(&with("vdev pl011\n  loc\n  0x1000\n"));
    assert_eq!(
        found[0],
        "6: option `loc` of vdev pl011 needs a value on the same line"
    );
}

#[test]
fn multi_line_vdev_errors_point_at_the_option_line() {
    let text = with("vdev shmem\n  allow a*\n  create TEST,0x1800\n  deny b\n");
    assert_error(
        &text,
        7,
        "size of region `TEST` 0x1800 is not a multiple of the 4 KiB page size",
    );
}

#[test]
fn interrupts_parse() {
    let vdevs = vdevs("vdev pl011 loc 0x9000000 intr gic:33\n");
    assert_eq!(
        vdevs[0],
        VdevSpec::Pl011 {
            loc: Some(Spanned::new(0x900_0000, at(5))),
            intr: Some(Interrupt {
                controller: "gic".into(),
                number: 33,
                at: at(5)
            }),
            at: at(5),
        }
    );
    assert_error(
        &with("vdev pl011 intr 33\n"),
        5,
        "`intr 33`: expected CONTROLLER:NUMBER (e.g. `intr gic:40`)",
    );
    assert_error(
        &with("vdev pl011 intr gic:x\n"),
        5,
        "interrupt number: `x` is not a number",
    );
    assert_error(
        &with("vdev pl011 intr gic:0x100000000\n"),
        5,
        "more than 32 bits",
    );
    assert_error(
        &with("vdev pl011 intr g.c:4\n"),
        5,
        "interrupt controller `g.c` holds `.`",
    );
    assert_error(
        &with("vdev pl011 loc nowhere\n"),
        5,
        "loc: `nowhere` is not a number",
    );
}

#[test]
fn ioapic_options() {
    let vdevs = vdevs("vdev ioapic intr apic\n");
    assert_eq!(
        vdevs[0],
        VdevSpec::IoApic {
            loc: None,
            parent: Spanned::new("apic".into(), at(5)),
            name: Spanned::new("ioapic".into(), at(5)),
            at: at(5),
        }
    );
    assert_error(
        &with("vdev ioapic intr apic:3\n"),
        5,
        "an ioapic's `intr` names the controller it delivers to, without a number",
    );
    assert_error(
        &with("vdev ioapic name io\n"),
        5,
        "vdev ioapic needs `intr CONTROLLER`",
    );
    assert_error(
        &with("vdev ioapic intr apic name my.io\n"),
        5,
        "ioapic name `my.io` holds `.`",
    );
}

#[test]
fn shmem_restriction_list_keeps_order() {
    let vdevs = vdevs("vdev shmem\n  deny pluto\n  allow pluto*\n  deny live*\n");
    let VdevSpec::Shmem(shmem) = &vdevs[0] else {
        panic!()
    };
    let rules: Vec<_> = shmem
        .rules
        .iter()
        .map(|r| (r.allow, r.glob.as_str(), r.at.line))
        .collect();
    assert_eq!(
        rules,
        [
            (false, "pluto", 6),
            (true, "pluto*", 7),
            (false, "live*", 8)
        ]
    );
}

#[test]
fn shmem_subst_on_one_line_as_qnx_writes_it() {
    let vdevs = vdevs(
        "vdev shmem subst foo,guest0 create foomem,0xf0000\nvdev shmem subst ,guest1 create mem,0xf0000 create other,4K\n",
    );
    let VdevSpec::Shmem(first) = &vdevs[0] else {
        panic!()
    };
    assert_eq!(
        first.substs,
        [Subst {
            old: "foo".into(),
            new: "guest0".into(),
            at: at(5)
        }]
    );
    assert_eq!(first.creates[0].name, "foomem");
    assert_eq!(first.creates[0].host_name, "guest0mem");
    let VdevSpec::Shmem(second) = &vdevs[1] else {
        panic!()
    };
    assert_eq!(second.substs[0].old, "");
    let hosts: Vec<_> = second
        .creates
        .iter()
        .map(|c| c.host_name.as_str())
        .collect();
    assert_eq!(hosts, ["guest1mem", "guest1other"]);
}

#[test]
fn subst_applies_even_when_written_after_create_and_first_match_wins() {
    let vdevs = vdevs("vdev shmem\n  create abc,4K\n  create xyz,4K\n  subst ab,A\n  subst a,B\n");
    let VdevSpec::Shmem(shmem) = &vdevs[0] else {
        panic!()
    };
    let hosts: Vec<_> = shmem.creates.iter().map(|c| c.host_name.as_str()).collect();
    assert_eq!(hosts, ["Ac", "xyz"]);
}

#[test]
fn shmem_name_errors() {
    let long = "r".repeat(32);
    assert_error(
        &with(&format!("vdev shmem create {long},4K\n")),
        5,
        "region name `rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr` is 32 bytes long; at most 31 are allowed",
    );
    assert_error(
        &with(&format!("vdev shmem allow {long}*\n")),
        5,
        "is 33 bytes long; at most 31",
    );
    assert_error(
        &with("vdev shmem deny [abc\n"),
        5,
        "has a `[` without a closing `]`",
    );
    assert_error(
        &with("vdev shmem create te*st,4K\n"),
        5,
        "region name `te*st` must not hold `*`",
    );
    assert_error(
        &with("vdev shmem create TEST1\n"),
        5,
        "`create TEST1`: expected NAME,SIZE",
    );
    assert_error(
        &with("vdev shmem create TEST1,4Q\n"),
        5,
        "region size: `4Q` is not a size",
    );
    assert_error(
        &with("vdev shmem subst foo\n"),
        5,
        "`subst foo`: expected OLD,NEW (OLD may be empty",
    );
    assert_error(
        &with("vdev shmem subst a,b,c\n"),
        5,
        "subst NEW `b,c` must not hold `,`",
    );
    let guest = "g".repeat(20);
    assert_error(
        &with(&format!(
            "vdev shmem\n  subst ,{guest}\n  create abcdefghijkl,4K\n"
        )),
        7,
        "region `abcdefghijkl` becomes `ggggggggggggggggggggabcdefghijkl` after subst, 32 bytes long; at most 31",
    );
    assert_error(
        &with("vdev shmem subst foo, create foo,4K\n"),
        5,
        "region `foo` becomes an empty name after subst",
    );
}

#[test]
fn shmem_mmio_needs_loc_and_intr() {
    let both = "a shmem vdev is an MMIO device only with both `loc` and `intr`";
    assert_error(
        &with("vdev shmem\n  create A,4K\n  loc 0x10000000\n"),
        7,
        both,
    );
    assert_error(&with("vdev shmem\n  intr gic:40\n"), 6, both);
}

#[test]
fn ivshmem_options() {
    let vdevs = vdevs("vdev ivshmem-plain name a size 4K\nvdev ivshmem-doorbell name b size 2M\n");
    let VdevSpec::Ivshmem(plain) = &vdevs[0] else {
        panic!()
    };
    assert_eq!(plain.doorbell_vectors, None);
    let VdevSpec::Ivshmem(doorbell) = &vdevs[1] else {
        panic!()
    };
    assert_eq!(doorbell.doorbell_vectors, Some(1));
    assert_eq!(doorbell.size, Spanned::new(2 << 20, at(6)));
    assert_error(
        &with("vdev ivshmem-doorbell name a size 4K vectors 65\n"),
        5,
        "vectors 65 is out of range (1 to 64)",
    );
    assert_error(
        &with("vdev ivshmem-doorbell name a size 4K vectors 0\n"),
        5,
        "vectors 0 is out of range",
    );
    assert_error(
        &with("vdev ivshmem-plain name a size 12K\n"),
        5,
        "ivshmem size 12K is not a power of two",
    );
    assert_error(
        &with("vdev ivshmem-plain name a size 2K\n"),
        5,
        "ivshmem size 0x800 is not a multiple of the 4 KiB page size",
    );
    assert_error(
        &with("vdev ivshmem-plain size 4K\n"),
        5,
        "vdev ivshmem-plain needs `name NAME`",
    );
    assert_error(
        &with("vdev ivshmem-doorbell name a\n"),
        5,
        "vdev ivshmem-doorbell needs `size SIZE`",
    );
    assert_error(
        &with("vdev ivshmem-plain name a* size 4K\n"),
        5,
        "ivshmem region name `a*` must not hold `*`",
    );
}

#[test]
fn vdev_specs_are_not_yet_model_devices() {
    // The parser leaves the architecture's defaults to validate.
    let vdevs = vdevs("vdev pl011\n");
    assert_eq!(
        vdevs[0],
        VdevSpec::Pl011 {
            loc: None,
            intr: None,
            at: at(5)
        }
    );
}

#[test]
fn cmdline_takes_one_quoted_value() {
    let vm = parse(&with(
        "cmdline \"console=ttyAMA0 root=/dev/vda # not a comment\"  # one\n",
    ))
    .unwrap();
    assert_eq!(
        vm.cmdline.map(|cmdline| (cmdline.value, cmdline.at.line)),
        Some((
            "console=ttyAMA0 root=/dev/vda # not a comment".to_string(),
            5
        ))
    );
    // A single word needs no quotes; without `cmdline` there is none.
    assert_eq!(
        parse(&with("cmdline quiet\n"))
            .unwrap()
            .cmdline
            .map(|c| c.value),
        Some("quiet".to_string())
    );
    assert_eq!(parse(&with("")).unwrap().cmdline, None);
}

#[test]
fn cmdline_errors_name_the_line() {
    assert_error(
        &with("cmdline \"console=ttyAMA0\n"),
        5,
        "unterminated quote",
    );
    assert_error(
        &with("cmdline \"a\" \"b\"\n"),
        5,
        "unexpected `b` after `cmdline a`",
    );
    assert_error(&with("cmdline \"caf\u{e9}\"\n"), 5, "only printable ASCII");
    assert_error(
        &with(&format!("cmdline {}\n", "x".repeat(1025))),
        5,
        "at most 1024",
    );
    assert_error(&with("cmdline a\ncmdline b\n"), 6, "cmdline");
    assert_error(&with("cmdline\n"), 5, "`cmdline` needs a value");
}
