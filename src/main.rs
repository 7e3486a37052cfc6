//! The `gent` command line: parse, dispatch, exit codes (0 ok, 2 bad usage or
//! bad input, 1 anything else). Logs go to stderr; with `--json` the last line on
//! stdout is one JSON object. Each command group lives in [`cli`].

use std::process::ExitCode;

use clap::Parser;

mod cli;

// mimalloc instead of the system allocator: generation and ingest allocate
// and free large buffers per batch, and glibc hands those back to the kernel
// each time, so every batch paid page faults again (15% of generation time).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = cli::Cli::parse();
    cli::args::set_read_limits(cli.max_input_bytes, cli.max_input_spans);
    cli::memory::set_purge_delay_for(cli.command.memory_use());
    match cli::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}
