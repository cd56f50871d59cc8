//! Compile errors of misused stage attributes, checked against the
//! `.stderr` snapshots in `tests/ui/`, and stage shapes that must compile.
//!
//! Bless changed snapshots with `TRYBUILD=overwrite cargo test -p wasmpipe-sdk-macros`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass_*.rs");
    t.compile_fail("tests/ui/err_*.rs");
}
