//! The `kvstore` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    kvstore::cli::main()
}
