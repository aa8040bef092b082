//! `kv lease`: grant, keep alive, look at, list and revoke leases, as
//! etcdctl's `lease` commands do (`list`, `timetolive --keys` is
//! `info --keys`).
//!
//! `list` and `info --keys` page through the server's answers
//! (`keyvalue.v1.KV/LeaseList`, `LeaseInfo` with `keys_limit`) until the
//! end, a page at a time, as `kv ls` does with keys.

use std::time::Duration;

use bytes::Bytes;
use clap::Subcommand;
use serde_json::{Value as Json, json};

use super::{Context, Outcome, outln, output, parse_timeout};
use crate::proto::keyvalue::v1 as pb;

#[derive(Subcommand, Debug)]
pub(super) enum LeaseCommand {
    /// Grant a lease with this TTL (e.g. 30s); prints its id.
    Grant {
        /// The time to live.
        #[arg(value_parser = parse_timeout)]
        ttl: Duration,
    },
    /// Restart the lease's TTL; with --every, keep doing so until Ctrl-C.
    KeepAlive {
        /// The lease id.
        id: i64,
        /// Renew at this interval until interrupted (e.g. 10s).
        #[arg(long, value_parser = parse_timeout)]
        every: Option<Duration>,
    },
    /// Print the lease's TTL and the time it has left; with --keys, then
    /// its keys, one a line.
    Info {
        /// The lease id.
        id: i64,
        /// Also print the lease's keys (those the token may see).
        #[arg(long)]
        keys: bool,
    },
    /// Print every live lease, in order of id, with its TTL and time left.
    List,
    /// Revoke the lease, deleting its keys; prints how many went.
    Revoke {
        /// The lease id.
        id: i64,
    },
}

/// A lease's line: `lease ID ttl Nms remaining Nms`.
fn describe(lease: &pb::LeaseInfoResponse) {
    outln!(
        "lease {} ttl {}ms remaining {}ms",
        lease.id,
        lease.ttl_ms,
        lease.remaining_ms
    );
}

fn lease_json(lease: &pb::LeaseInfoResponse) -> Json {
    json!({"id": lease.id, "ttl_ms": lease.ttl_ms, "remaining_ms": lease.remaining_ms})
}

pub(super) async fn run(cx: &mut Context, command: LeaseCommand) -> Outcome {
    match command {
        LeaseCommand::Grant { ttl } => {
            let lease = cx.client.lease_grant(ttl).await?;
            if cx.json {
                output::json(&json!({"id": lease.id, "ttl_ms": lease.ttl_ms}));
            } else {
                outln!("{}", lease.id);
            }
        }
        LeaseCommand::KeepAlive { id, every } => loop {
            let lease = cx.client.lease_keep_alive(id).await?;
            if cx.json {
                output::json(&json!({"id": lease.id, "ttl_ms": lease.ttl_ms}));
            }
            let Some(every) = every else { break };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                () = tokio::time::sleep(every) => {}
            }
        },
        LeaseCommand::Info { id, keys: false } => {
            let lease = cx.client.lease_info(id).await?;
            if cx.json {
                output::json(&lease_json(&lease));
            } else {
                describe(&lease);
            }
        }
        LeaseCommand::Info { id, keys: true } => info_with_keys(cx, id).await?,
        LeaseCommand::List => list(cx).await?,
        LeaseCommand::Revoke { id } => {
            let reply = cx.client.lease_revoke(id).await?;
            if cx.json {
                output::json(&json!({"deleted": reply.deleted}));
            } else {
                outln!("{}", reply.deleted);
            }
        }
    }
    Ok(())
}

/// The lease, then its keys, a page at a time.
async fn info_with_keys(cx: &mut Context, id: i64) -> Outcome {
    let mut after = Bytes::new();
    let mut keys = Vec::new();
    let mut first = true;
    loop {
        let page = cx.client.lease_keys(id, after).await?;
        if first && !cx.json {
            describe(&page);
        }
        first = false;
        for key in &page.keys {
            if cx.json {
                keys.push(Json::String(cx.bytes_as().encode(key).0));
            } else {
                output::line(&[&cx.raw(key)]);
            }
        }
        match page.keys.last() {
            Some(last) if page.more_keys => after = last.clone(),
            _ => {
                if cx.json {
                    let mut object = lease_json(&page);
                    object["keys"] = Json::Array(keys);
                    output::json(&object);
                }
                return Ok(());
            }
        }
    }
}

/// Every live lease, a page at a time.
async fn list(cx: &mut Context) -> Outcome {
    let mut after = None;
    let mut listed = Vec::new();
    loop {
        let page = cx.client.lease_list(after).await?;
        for lease in &page.leases {
            if cx.json {
                listed.push(lease_json(lease));
            } else {
                describe(lease);
            }
        }
        match page.leases.last() {
            Some(last) if page.more => after = Some(last.id),
            _ => break,
        }
    }
    if cx.json {
        output::json(&Json::Array(listed));
    }
    Ok(())
}
