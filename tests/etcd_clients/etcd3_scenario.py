"""A scenario of python-etcd3 (Debian's python3-etcd3), run by
tests/it/etcd_clients.rs against kvserver and against a real etcd: the lines
it prints must be the same on both. Ids and revisions, which differ by
design, are never printed.

Usage: python3 etcd3_scenario.py HOST PORT
"""

import sys
import threading
import time

import etcd3
import grpc


def say(*parts: object) -> None:
    print(*parts, flush=True)


def main() -> None:
    client = etcd3.client(host=sys.argv[1], port=int(sys.argv[2]))
    client.put("py/a", "1")
    client.put("py/b", "2")
    value, meta = client.get("py/a")
    say("get:", value, meta.version)
    say("prefix:", [(v, m.key) for v, m in client.get_prefix("py/", sort_order="descend")])
    say("range:", [m.key for _, m in client.get_range("py/a", "py/c")])
    say("missing:", client.get("py/none"))
    say("put if not exists (exists):", client.put_if_not_exists("py/a", "x"))
    say("put if not exists (new):", client.put_if_not_exists("py/c", "3"))
    say("replace (wrong):", client.replace("py/a", "9", "10"))
    say("replace (right):", client.replace("py/a", "1", "10"))
    ok, responses = client.transaction(
        compare=[
            client.transactions.value("py/a") == "10",
            client.transactions.version("py/b") > 0,
        ],
        success=[client.transactions.put("py/d", "4"), client.transactions.get("py/d")],
        failure=[client.transactions.delete("py/a")],
    )
    say("txn:", ok, [[(v, m.key) for v, m in r] if isinstance(r, list) else type(r).__name__ for r in responses])
    say("delete:", client.delete("py/c"), client.delete("py/c"))
    say("delete prefix:", client.delete_prefix("py/").deleted)

    lease = client.lease(30)
    client.put("py/leased", "v", lease=lease)
    say("lease ttl:", lease.granted_ttl, "keys:", lease.keys)
    say("refresh:", [r.TTL for r in lease.refresh()])
    lease.revoke()
    say("after revoke:", client.get("py/leased"), lease.remaining_ttl)
    try:
        client.put("py/x", "v", lease=0x7777)
    except grpc.RpcError as error:
        say("unknown lease:", error.code(), error.details())

    # A watch sees a put and a delete, in order.
    events, cancel = client.watch_prefix("py/w/")
    seen = []

    def collect() -> None:
        for event in events:
            seen.append((type(event).__name__, event.key, event.value))
            if len(seen) == 2:
                break

    reader = threading.Thread(target=collect)
    reader.start()
    deadline = time.time() + 10
    while time.time() < deadline:
        client.put("py/w/probe", "p")
        client.delete("py/w/probe")
        reader.join(0.2)
        if not reader.is_alive():
            break
    cancel()
    say("watch:", seen[:2])

    # python-etcd3's own lock (a transaction on a leased key). Its waiting
    # for a held lock fails with Debian's tenacity (a TypeError on etcd as
    # well), so the second holder comes after the first releases.
    first = client.lock("py-lock", ttl=10)
    say("lock acquired:", first.acquire(timeout=5), first.is_acquired())
    second = client.lock("py-lock", ttl=10)
    say("second sees it held:", second.is_acquired(), client.get(first.key)[0] == first.uuid)
    first.release()
    say("second after release:", second.acquire(timeout=5), first.is_acquired())
    second.release()

    status = client.status()
    say("status:", status.version, status.leader.id == status.leader.id)
    say("members:", len(list(client.members)))
    say("alarms:", list(client.list_alarms()))
    client.delete_prefix("py/")


if __name__ == "__main__":
    main()
