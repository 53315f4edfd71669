//! Generates the FFI declarations for libsquashfs (squashfs-tools-ng >= 1.2)
//! from the installed headers (`libsquashfs-dev`) with bindgen (needs `libclang-dev`).

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rustc-link-lib=squashfs");

    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .allowlist_function("sqfs_.*")
        .allowlist_type("sqfs_.*")
        .allowlist_type("SQFS_.*")
        .allowlist_var("SQFS_.*")
        .prepend_enum_name(false)
        .derive_default(true)
        .layout_tests(false)
        .generate()
        .expect("bindgen failed on <sqfs/*.h>: install libsquashfs-dev and libclang-dev");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("sqfs.rs");
    bindings.write_to_file(&out).expect("writing bindings");
}
