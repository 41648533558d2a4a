//! The `kaon` binary: parses the command line and hands off to [`kaon::cli`].

use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> std::process::ExitCode {
    let huge_pages = kaon::node::process::huge_pages();
    if let kaon::node::process::HugePages::Refused(errno) = huge_pages {
        eprintln!("warning: transparent huge pages stay on (prctl: errno {errno})");
    }
    match kaon::cli::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
