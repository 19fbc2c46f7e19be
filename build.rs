//! Looks for the `terraform` CLI for the tests of the real terraform backend. Without it they
//! are compiled as ignored, so that the test summary counts them (each named
//! "terraform is not on PATH") and a run without terraform cannot pass as a full one
//! unnoticed.

use std::process::{Command, Stdio};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(terraform_available)");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-changed=build.rs");
    let available = Command::new("terraform")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if available {
        println!("cargo::rustc-cfg=terraform_available");
    }
}
