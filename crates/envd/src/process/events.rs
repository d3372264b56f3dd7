//! The event stream of `Start` and `Connect`: start → data* → end, with
//! keepalives while idle, and then the stream ends.

use super::output::{Attach, End, Item, Output, Subscription};
use connectrpc::ConnectError;
use futures::Stream;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use wrenn_proto::process::ProcessEvent;
use wrenn_proto::process::process_event::{
    self, DataEvent, EndEvent, Event, KeepAlive, StartEvent,
};

/// Header E2B clients send to ask for keepalives every N seconds (they send 50).
pub const KEEPALIVE_HEADER: &str = "keepalive-ping-interval";
/// Keepalive period when the client does not ask for one; short enough for
/// common idle timeouts of proxies (60 s) in front of envd.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(30);

/// The keepalive period a request asks for, clamped to something sane.
pub fn keepalive_interval(headers: &axum::http::HeaderMap) -> Duration {
    headers
        .get(KEEPALIVE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|secs| Duration::from_secs(secs.clamp(1, 600)))
        .unwrap_or(DEFAULT_KEEPALIVE)
}

fn event(e: impl Into<Event>) -> ProcessEvent {
    ProcessEvent {
        event: Some(e.into()),
        ..Default::default()
    }
}

fn start_event(pid: u32) -> ProcessEvent {
    event(StartEvent {
        pid,
        ..Default::default()
    })
}

fn data_event(output: Output) -> ProcessEvent {
    let output = match output {
        Output::Stdout(b) => process_event::data_event::Output::Stdout(b.to_vec()),
        Output::Stderr(b) => process_event::data_event::Output::Stderr(b.to_vec()),
        Output::Pty(b) => process_event::data_event::Output::Pty(b.to_vec()),
    };
    event(DataEvent {
        output: Some(output),
        ..Default::default()
    })
}

fn end_event(end: End) -> ProcessEvent {
    event(EndEvent {
        exit_code: end.exit_code,
        exited: end.exited,
        status: end.status,
        error: end.error,
        ..Default::default()
    })
}

fn keepalive_event() -> ProcessEvent {
    event(KeepAlive::default())
}

enum State {
    Start {
        pid: u32,
        attach: Attach,
        keepalive: Duration,
    },
    Live {
        sub: Subscription,
        keepalive: Duration,
        timer: Pin<Box<Sleep>>,
    },
    Ending(End),
    Done,
}

/// Streams one process's events. Dropping the stream detaches only this
/// reader; the process keeps running.
pub fn process_events(
    pid: u32,
    attach: Attach,
    keepalive: Duration,
) -> impl Stream<Item = Result<ProcessEvent, ConnectError>> + Send + 'static {
    let init = State::Start {
        pid,
        attach,
        keepalive,
    };
    futures::stream::unfold(init, |state| async move {
        match state {
            State::Start {
                pid,
                attach,
                keepalive,
            } => {
                let next = match attach {
                    Attach::Finished(end) => State::Ending(end),
                    Attach::Live(sub) => State::Live {
                        sub,
                        keepalive,
                        timer: Box::pin(tokio::time::sleep(keepalive)),
                    },
                };
                Some((Ok(start_event(pid)), next))
            }
            State::Live {
                mut sub,
                keepalive,
                mut timer,
            } => {
                let item = tokio::select! {
                    item = sub.recv() => item,
                    () = &mut timer => {
                        timer.as_mut().reset(Instant::now() + keepalive);
                        return Some((Ok(keepalive_event()), State::Live { sub, keepalive, timer }));
                    }
                };
                match item {
                    Some(Item::Data(output)) => {
                        timer.as_mut().reset(Instant::now() + keepalive);
                        Some((
                            Ok(data_event(output)),
                            State::Live {
                                sub,
                                keepalive,
                                timer,
                            },
                        ))
                    }
                    Some(Item::End(end)) => Some((Ok(end_event(end)), State::Done)),
                    None if sub.was_dropped() => Some((
                        Err(ConnectError::resource_exhausted(
                            "reader fell too far behind the process output and was detached; \
                             reattach with Connect",
                        )),
                        State::Done,
                    )),
                    None => Some((
                        Err(ConnectError::aborted(
                            "process output closed without an end event",
                        )),
                        State::Done,
                    )),
                }
            }
            State::Ending(end) => Some((Ok(end_event(end)), State::Done)),
            State::Done => None,
        }
    })
}
