//! Log setup: tracing to stderr, text or JSON, filtered by the configured level or `KEYSAFE_LOG`.
//!
//! A line a request logs names the request as a span named `request` would, without a span per
//! request (`keysafe_server::request_log`): in text, `request{id=… client=… remote=…}: ` after
//! the level; in JSON, `span` and `spans` objects with those fields and `"name":"request"`.

use keysafe_server::request_log::{self, RequestLog};
use std::fmt;
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::registry::LookupSpan;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init(format: Format, default_level: &str) {
    let filter = EnvFilter::try_from_env("KEYSAFE_LOG")
        .or_else(|_| EnvFilter::try_new(default_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        Format::Text => builder
            .event_format(Text(format::format().with_target(false).with_ansi(ansi)))
            .try_init(),
        Format::Json => builder
            .json()
            .event_format(Json(
                format::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            ))
            .try_init(),
    };
}

/// The default text format, with the request's context after the level.
struct Text(format::Format<format::Full, SystemTime>);

impl<S, N> FormatEvent<S, N> for Text
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some(prefix) = request_log::with_current(|r| text_prefix(&mut w, event, r)) else {
            return self.0.format_event(ctx, w, event);
        };
        prefix?;
        ctx.format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// What the default format writes before an event's fields when the event is inside one span,
/// `request`, with these fields (without colours).
fn text_prefix(w: &mut Writer<'_>, event: &Event<'_>, r: &RequestLog) -> fmt::Result {
    SystemTime.format_time(w)?;
    write!(
        w,
        " {:>5} request{{id={} client={} remote={}}}: ",
        event.metadata().level().as_str(),
        r.id(),
        r.client(),
        r.remote()
    )
}

/// The default JSON format, with the request's context as its current span.
struct Json(format::Format<format::Json, SystemTime>);

impl<S, N> FormatEvent<S, N> for Json
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some(span) = request_log::with_current(|r| {
            serde_json::json!({
                "client": r.client(),
                "id": r.id(),
                "name": "request",
                "remote": r.remote(),
            })
            .to_string()
        }) else {
            return self.0.format_event(ctx, w, event);
        };
        // The default writes one object and a newline, and no `span` or `spans` key when no
        // span is current (none ever is: the server opens none).
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        let object = line.trim_end().strip_suffix('}').ok_or(fmt::Error)?;
        writeln!(w, "{object},\"span\":{span},\"spans\":[{span}]}}")
    }
}
