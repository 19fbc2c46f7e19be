//! Runs every replay corpus case through the core and compares with the committed output.

use poolkeeper_tests::corpus::check_corpus;

#[test]
fn lifecycle_corpus() {
    check_corpus("lifecycle", 30);
}

#[test]
fn prebuild_corpus() {
    check_corpus("prebuilds", 40);
}

#[test]
fn schedule_corpus() {
    check_corpus("schedule", 1);
}
