//! `cargo run -p uniffi-bindgen -- generate <cdylib> --language kotlin --out-dir bindings/kotlin`
//! (library mode). The uniffi version is the one tidesync-ffi is built with.

fn main() {
    uniffi::uniffi_bindgen_main()
}
