use anyhow::Context;
use clap::Parser;
use std::future::IntoFuture;
use std::net::{Ipv6Addr, SocketAddr};

/// Wrenn's guest daemon (E2B envd protocol).
#[derive(Parser, Debug)]
#[command(version = envd::VERSION)]
struct Args {
    /// Port to listen on (all interfaces).
    #[arg(long, default_value_t = envd::DEFAULT_PORT)]
    port: u16,
    /// Command started at boot, tagged `init-cmd`.
    #[arg(long)]
    cmd: Option<String>,
    /// Directory for the capsule identity files written on `/init`.
    #[arg(long, default_value = "/run/wrenn")]
    run_dir: std::path::PathBuf,
    /// Forward services listening only on loopback to the external interfaces
    /// (auto: only when running as PID 1, i.e. inside a capsule).
    #[arg(long, value_enum, default_value_t = envd::lifecycle::PortForwardMode::Auto)]
    port_forward: envd::lifecycle::PortForwardMode,
}

/// `epoll_ctl` and `epoll_wait` of the whole binary (mio's included) resolve here: `build.rs`
/// links with `--wrap`, which points the real calls at `__real_*`. See `envd::epoll_tokens`.
mod epoll_wrap {
    use std::ffi::c_int;

    unsafe extern "C" {
        fn __real_epoll_ctl(
            epfd: c_int,
            op: c_int,
            fd: c_int,
            event: *mut libc::epoll_event,
        ) -> c_int;
        fn __real_epoll_wait(
            epfd: c_int,
            events: *mut libc::epoll_event,
            maxevents: c_int,
            timeout: c_int,
        ) -> c_int;
    }

    /// # Safety
    /// The contract of epoll_ctl(2).
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn __wrap_epoll_ctl(
        epfd: c_int,
        op: c_int,
        fd: c_int,
        event: *mut libc::epoll_event,
    ) -> c_int {
        // Held across the call so that a waiter filtering an event of a just-added source sees
        // it live.
        let mut table = envd::epoll_tokens::table();
        // SAFETY: the caller's arguments, passed on unchanged.
        let rc = unsafe { __real_epoll_ctl(epfd, op, fd, event) };
        if rc != 0 {
            // Unlocking may make syscalls of its own; the caller reads errno next.
            // SAFETY: errno is thread-local and always addressable.
            let errno = unsafe { *libc::__errno_location() };
            drop(table);
            // SAFETY: as above.
            unsafe { *libc::__errno_location() = errno };
            return rc;
        }
        match op {
            // SAFETY: ADD and MOD succeeded, so `event` was readable.
            libc::EPOLL_CTL_ADD | libc::EPOLL_CTL_MOD => table.set(fd, unsafe { (*event).u64 }),
            libc::EPOLL_CTL_DEL => table.deleted(fd),
            _ => {}
        }
        rc
    }

    /// # Safety
    /// The contract of epoll_wait(2).
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn __wrap_epoll_wait(
        epfd: c_int,
        events: *mut libc::epoll_event,
        maxevents: c_int,
        timeout: c_int,
    ) -> c_int {
        // SAFETY: the caller's arguments, passed on unchanged.
        let n = unsafe { __real_epoll_wait(epfd, events, maxevents, timeout) };
        if n <= 0 {
            return n;
        }
        // SAFETY: the kernel filled `n` entries of the caller's buffer.
        let ready = unsafe { std::slice::from_raw_parts_mut(events, n as usize) };
        // At most `n`, so it fits.
        envd::epoll_tokens::table().retain_live(ready) as c_int
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "envd=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let state = envd::state::Envd::default();
    // Take over child reaping before anything forks (envd may be PID 1).
    envd::process::Manager::global();
    // Dual-stack socket: one listener serves IPv4 and IPv6 clients.
    let addr = SocketAddr::from((Ipv6Addr::UNSPECIFIED, args.port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    if envd::epoll_tokens::table().is_empty() {
        // tokio registered its wakeup and the listener by now; an empty table means the linker
        // did not wrap epoll (stale events after a restore would not be filtered).
        tracing::warn!("epoll registrations are not tracked: envd was linked without --wrap");
    }
    // Machine-readable line: tests and the host agent start envd with `--port 0`.
    println!("envd listening on {local}");
    tracing::info!(%local, "envd listening");
    state.lifecycle.start(envd::lifecycle::Config {
        run_dir: args.run_dir.clone(),
        envd_port: local.port(),
        port_forward: args.port_forward.enabled(),
    });
    // Tracked so `/snapshot/prepare` can close connections; ConnId lets a
    // handler spare its own.
    let listener = envd::conntrack::TrackedListener::new(listener, state.lifecycle.conns.clone());
    // A failing boot command must not take envd (maybe PID 1) down with it.
    if let Some(cmd) = &args.cmd
        && let Err(e) = envd::process::start_init_cmd(&state, cmd)
    {
        tracing::error!(error = %e, "starting --cmd failed");
    }
    let app =
        envd::server::app(state).into_make_service_with_connect_info::<envd::conntrack::ConnId>();
    // SIGTERM/SIGINT: terminate our processes, then exit.
    tokio::select! {
        served = axum::serve(listener, app).into_future() => served?,
        () = envd::process::shutdown_on_signal() => {}
    }
    Ok(())
}
