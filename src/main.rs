//! The `phonebank` binary. Everything lives in the library so tests and future helper
//! binaries share it; this only hands the command line over.

fn main() -> std::process::ExitCode {
    phonebank::cli::run()
}
