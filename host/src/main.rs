#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    oubli::cli::main()
}
