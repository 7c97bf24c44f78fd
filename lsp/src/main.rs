//! `flow-lsp`: the Flow language server, over stdin and stdout.

use std::process::ExitCode;

// The compiler allocates many small tree nodes; the same allocator as `flowc`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        // Analyses run on the blocking pool: give them the compiler's deep stack.
        .thread_stack_size(flow_lsp::server::ANALYSIS_STACK)
        .max_blocking_threads(4)
        .build();
    match runtime {
        Ok(runtime) => {
            runtime.block_on(flow_lsp::server::serve_stdio());
            // A read of stdin may still be blocked on a pool thread (the client need not
            // close it after `exit`): do not wait for it.
            runtime.shutdown_background();
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("flow-lsp: cannot start: {error}");
            ExitCode::FAILURE
        }
    }
}
