//! Compile errors of misused stage attributes, checked against the
//! `.stderr` snapshots in `tests/ui/`, and stage shapes that must compile.
//!
//! Bless changed snapshots with `TRYBUILD=overwrite cargo test -p wasmpipe-sdk-macros`.

#[test]
fn ui() {
    // The snapshots are rustc's diagnostics. CI lints the workspace through
    // clippy's driver (`RUSTC_WORKSPACE_WRAPPER`), which trybuild's cargo
    // would inherit, adding clippy's warnings to every snapshot; the cases
    // are compiled with rustc alone, as a stage author's would be.
    // SAFETY: this is the binary's only test, so no other thread reads the
    // environment while it changes.
    unsafe { std::env::remove_var("RUSTC_WORKSPACE_WRAPPER") };
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass_*.rs");
    t.compile_fail("tests/ui/err_*.rs");
}
