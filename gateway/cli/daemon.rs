//! `tollgate run`: the library's [`Gateway`] started from the command
//! line's configuration and state, serving until a signal (SIGHUP
//! reloads).

use std::process::ExitCode;

use tollgate::daemon::Gateway;
use tracing::{error, info};

use super::{load_config, RunArgs};

pub(crate) fn run(args: RunArgs) -> ExitCode {
    let config = match load_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let builder = Gateway::builder(config)
        .config_file(args.config.clone())
        .data_dir(args.state.data_dir())
        .master_key(args.state.master_key.clone());
    rt.block_on(async move {
        let mut gateway = match builder.start().await {
            Ok(g) => g,
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        wait_for_stop(&mut gateway).await;
        tollgate::admin::systemd::stopping();
        info!("stopping: ending calls");
        gateway.shutdown().await;
        info!("stopped");
        ExitCode::SUCCESS
    })
}

/// Waits for Ctrl-C or SIGTERM; SIGHUP reloads the configuration (and so
/// the IDS rules) meanwhile.
async fn wait_for_stop(gateway: &mut Gateway) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        shutdown_signal().await;
        return;
    };
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = hup.recv() => {
                info!("SIGHUP: reloading the configuration");
                tollgate::admin::systemd::reloading();
                let status = match gateway.reload().await {
                    Ok(summary) => format!("serving; configuration reloaded: {summary}"),
                    Err(e) => format!("serving; configuration NOT reloaded: {e}"),
                };
                tollgate::admin::systemd::ready(&status);
            }
        }
    }
}

/// Waits for Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
