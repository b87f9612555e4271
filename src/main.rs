fn main() -> std::process::ExitCode {
    tokend::cli::main()
}
