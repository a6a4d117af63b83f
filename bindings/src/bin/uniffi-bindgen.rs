//! `uniffi-bindgen`: writes the Kotlin, Swift and Python sources of the bindings from the
//! built library (see the README, "Bindings").

fn main() {
    uniffi::uniffi_bindgen_main()
}
