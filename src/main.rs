//! The `cxnode` binary: parses the command line and dispatches to `cli`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    cxnode::cli::main()
}
