//! Name validation, restriction lists (the seed's examples) and `subst`.

use alloc::vec;
use alloc::vec::Vec;

use crate::shmem::policy::{name_in_field, validate_name};
use crate::shmem::{HostName, Policy, Rule, Status, Subst};

fn resolve(policy: &Policy, name: &str) -> Result<HostName, Status> {
    policy.resolve(name.as_bytes())
}

/// The expected successful outcome.
fn ok(host: &str) -> Result<HostName, Status> {
    Ok(HostName::new(host.as_bytes()).unwrap())
}

fn rules(rules: Vec<Rule>) -> Policy {
    Policy::new(rules, Vec::new())
}

#[test]
fn allow_list_ends_with_implicit_deny() {
    let policy = rules(vec![Rule::allow("test*"), Rule::allow("pluto")]);
    assert_eq!(resolve(&policy, "test"), ok("test"));
    assert_eq!(resolve(&policy, "test1"), ok("test1"));
    assert_eq!(resolve(&policy, "testing"), ok("testing"));
    assert_eq!(resolve(&policy, "pluto"), ok("pluto"));
    assert_eq!(resolve(&policy, "plutoplanet"), Err(Status::NoPermission));
    assert_eq!(resolve(&policy, "mars"), Err(Status::NoPermission));
    assert_eq!(resolve(&policy, "TEST1"), Err(Status::NoPermission));
}

#[test]
fn deny_list_ends_with_implicit_allow() {
    let policy = rules(vec![Rule::deny("live*"), Rule::deny("pluto")]);
    assert_eq!(resolve(&policy, "live"), Err(Status::NoPermission));
    assert_eq!(resolve(&policy, "livestream"), Err(Status::NoPermission));
    assert_eq!(resolve(&policy, "pluto"), Err(Status::NoPermission));
    assert_eq!(resolve(&policy, "plutoplanet"), ok("plutoplanet"));
    assert_eq!(resolve(&policy, "mars"), ok("mars"));
    assert_eq!(resolve(&policy, "alive"), ok("alive"));
}

#[test]
fn first_match_wins() {
    let policy = rules(vec![Rule::deny("pluto"), Rule::allow("pluto*")]);
    assert_eq!(resolve(&policy, "pluto"), Err(Status::NoPermission));
    assert_eq!(resolve(&policy, "plutoplanet"), ok("plutoplanet"));
    assert_eq!(resolve(&policy, "mars"), Err(Status::NoPermission));
    // Reversed, `allow pluto*` decides for pluto too.
    let policy = rules(vec![Rule::allow("pluto*"), Rule::deny("pluto")]);
    assert_eq!(resolve(&policy, "pluto"), ok("pluto"));
}

#[test]
fn empty_policy_allows_everything_unchanged() {
    let policy = Policy::default();
    assert_eq!(resolve(&policy, "anything"), ok("anything"));
    assert!(policy.permits(b"x"));
}

#[test]
fn subst_replaces_the_first_matching_prefix() {
    let policy = Policy::new(Vec::new(), vec![Subst::new("foo", "guest0")]);
    assert_eq!(resolve(&policy, "foomem"), ok("guest0mem"));
    assert_eq!(resolve(&policy, "foo"), ok("guest0"));
    assert_eq!(resolve(&policy, "barmem"), ok("barmem"));
    let policy = Policy::new(Vec::new(), vec![Subst::new("", "guest0")]);
    assert_eq!(resolve(&policy, "mem"), ok("guest0mem"));
    let policy = Policy::new(
        Vec::new(),
        vec![
            Subst::new("foo", "a"),
            Subst::new("f", "b"),
            Subst::new("", "c"),
        ],
    );
    assert_eq!(resolve(&policy, "foomem"), ok("amem"));
    assert_eq!(resolve(&policy, "fun"), ok("bun"));
    assert_eq!(resolve(&policy, "mem"), ok("cmem"));
    // NEW may be empty: the prefix is stripped.
    let policy = Policy::new(Vec::new(), vec![Subst::new("guest-", "")]);
    assert_eq!(resolve(&policy, "guest-ring"), ok("ring"));
    assert_eq!(resolve(&policy, "guest-"), Err(Status::IllegalName));
}

#[test]
fn subst_result_must_fit() {
    let policy = Policy::new(Vec::new(), vec![Subst::new("", "a-long-prefix-")]);
    assert_eq!(
        resolve(&policy, "seventeen-bytes!!"),
        ok("a-long-prefix-seventeen-bytes!!")
    );
    assert_eq!(
        resolve(&policy, "eighteen-bytes!!!!"),
        Err(Status::IllegalName)
    );
}

#[test]
fn restriction_list_sees_the_guest_visible_name() {
    let policy = Policy::new(vec![Rule::allow("foo*")], vec![Subst::new("foo", "guest0")]);
    assert_eq!(resolve(&policy, "foomem"), ok("guest0mem"));
    assert_eq!(resolve(&policy, "guest0mem"), Err(Status::NoPermission));
    let policy = Policy::new(vec![Rule::deny("guest*")], vec![Subst::new("", "guest0")]);
    assert_eq!(resolve(&policy, "mem"), ok("guest0mem"));
}

#[test]
fn illegal_names() {
    let policy = rules(vec![Rule::allow("*")]);
    for name in [
        "",
        "te*st",
        "a?",
        "[x]",
        "tab\there",
        "nul\0byte",
        "del\x7f",
    ] {
        assert_eq!(resolve(&policy, name), Err(Status::IllegalName), "{name:?}");
    }
    let longest = "x".repeat(31);
    assert_eq!(resolve(&policy, &longest), ok(&longest));
    assert_eq!(resolve(&policy, &"x".repeat(32)), Err(Status::IllegalName));
    // Illegal before refused.
    let policy = rules(vec![Rule::allow("test*")]);
    assert_eq!(resolve(&policy, "test*"), Err(Status::IllegalName));
    assert_eq!(validate_name(b"with space, comma]"), Ok(()));
    assert_eq!(validate_name(&[0xc3, 0xa9]), Err(Status::IllegalName));
}

#[test]
fn names_in_the_factory_field() {
    let mut field = [0u8; 32];
    field[..5].copy_from_slice(b"TEST1");
    assert_eq!(name_in_field(&field), Ok(&b"TEST1"[..]));
    assert_eq!(name_in_field(&[0u8; 32]), Ok(&b""[..]));
    assert_eq!(name_in_field(&[b'a'; 32]), Err(Status::IllegalName));
    let mut full = [b'a'; 32];
    full[31] = 0;
    assert_eq!(name_in_field(&full).map(<[u8]>::len), Ok(31));
}

#[test]
fn substitute_ignores_the_restriction_list() {
    let policy = Policy::new(vec![Rule::deny("*")], vec![Subst::new("foo", "guest0")]);
    assert_eq!(policy.resolve(b"foomem"), Err(Status::NoPermission));
    assert_eq!(policy.substitute(b"foomem"), ok("guest0mem"));
    assert_eq!(policy.substitute(b"bad*"), Err(Status::IllegalName));
}

#[test]
fn host_names() {
    let name = HostName::concat(b"guest0", b"mem").unwrap();
    assert_eq!(name.as_str(), "guest0mem");
    assert_eq!(
        alloc::format!("{name} {name:?}"),
        "guest0mem HostName(\"guest0mem\")"
    );
    assert_eq!(HostName::new(b""), Err(Status::IllegalName));
    assert_eq!(HostName::new(&[b'a'; 32]), Err(Status::IllegalName));
    assert_eq!(HostName::new(b"a[b"), Err(Status::IllegalName));
    assert_eq!(Status::DoesNotExist.code(), 6);
    assert_eq!(u32::from(Status::ClientMax), 3);
}
