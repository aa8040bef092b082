// A scenario of Go's etcd client (go.etcd.io/etcd/clientv3 3.4, Debian's
// golang-etcd-server-dev) and its concurrency package, run by
// tests/it/etcd_clients.rs against kvserver and against a real etcd: the
// lines it prints must be the same on both. Ids and revisions, which differ
// by design, are never printed; what is compared is what a program sees.
//
// Usage: clientv3 ENDPOINT SECTION...
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
	"go.etcd.io/etcd/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/etcdserver/api/v3lock/v3lockpb"
	"go.etcd.io/etcd/etcdserver/api/v3rpc/rpctypes"
	pb "go.etcd.io/etcd/etcdserver/etcdserverpb"
)

var ctx = context.Background()

func say(format string, args ...interface{}) { fmt.Printf(format+"\n", args...) }

// check prints the error (etcd's clients turn etcd's messages into typed
// errors, so the text is part of what is compared) and says whether there
// was none.
func check(what string, err error) bool {
	if err != nil {
		say("%s: error: %v", what, rpctypes.Error(err))
		return false
	}
	return true
}

func pairs(resp *clientv3.GetResponse) string {
	var parts []string
	for _, kv := range resp.Kvs {
		parts = append(parts, string(kv.Key)+"="+string(kv.Value))
	}
	return strings.Join(parts, ",")
}

func kvAndTxn(cli *clientv3.Client) {
	check("put", func() error { _, err := cli.Put(ctx, "go/a", "1"); return err }())
	cli.Put(ctx, "go/b", "2")
	resp, err := cli.Get(ctx, "go/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend))
	if check("get", err) {
		say("get prefix descending: %s count=%d more=%v", pairs(resp), resp.Count, resp.More)
	}
	lease, err := cli.Grant(ctx, 60)
	if !check("grant", err) {
		return
	}
	cli.Put(ctx, "go/leased", "x", clientv3.WithLease(lease.ID))
	// A compare on a key's lease, and a transaction nested in another.
	txn, err := cli.Txn(ctx).If(
		clientv3.Compare(clientv3.LeaseValue("go/leased"), "=", lease.ID),
		clientv3.Compare(clientv3.Value("go/a"), "=", "1"),
	).Then(
		clientv3.OpPut("go/c", "3"),
		clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.Version("go/b"), ">", 5)},
			[]clientv3.Op{clientv3.OpPut("go/d", "never")},
			[]clientv3.Op{clientv3.OpPut("go/d", "4"), clientv3.OpGet("go/", clientv3.WithPrefix(), clientv3.WithKeysOnly())},
		),
	).Commit()
	if check("nested txn", err) {
		nested := txn.Responses[1].GetResponseTxn()
		say("nested txn: succeeded=%v inner succeeded=%v inner responses=%d", txn.Succeeded, nested.Succeeded, len(nested.Responses))
		var names []string
		for _, kv := range nested.Responses[1].GetResponseRange().Kvs {
			names = append(names, string(kv.Key)+"("+string(kv.Value)+")")
		}
		say("nested range, keys only, before the outer put is seen: %s", strings.Join(names, ","))
	}
	txn, err = cli.Txn(ctx).If(
		clientv3.Compare(clientv3.LeaseValue("go/a"), "=", lease.ID),
	).Commit()
	if check("lease compare on a key without one", err) {
		say("go/a has the lease: %v", txn.Succeeded)
	}
	// A compare over a range of keys: every key must hold it.
	txn, err = cli.Txn(ctx).If(
		clientv3.Compare(clientv3.Version("go/").WithPrefix(), ">", 0),
	).Then(clientv3.OpPut("go/all", "yes")).Else(clientv3.OpPut("go/all", "no")).Commit()
	if check("range compare", err) {
		say("every key of go/ has a version: %v", txn.Succeeded)
	}
	txn, err = cli.Txn(ctx).If(
		clientv3.Compare(clientv3.Value("go/").WithRange("go/z"), "=", "1"),
	).Commit()
	if check("range compare on values", err) {
		say("every value is 1: %v", txn.Succeeded)
	}
	txn, err = cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision("nothing/").WithPrefix(), "=", 0),
	).Commit()
	if check("range compare on an empty range", err) {
		say("an empty range compares as a missing key: %v", txn.Succeeded)
	}
	_, err = cli.Txn(ctx).Then(clientv3.OpPut("go/x", "1"), clientv3.OpDelete("go/", clientv3.WithPrefix())).Commit()
	check("put and delete of one key in a txn", err)
	_, err = cli.Put(ctx, "go/e", "", clientv3.WithIgnoreValue())
	check("ignore value of a missing key", err)
	_, err = cli.Put(ctx, "go/e", "v", clientv3.WithLease(clientv3.LeaseID(0x7777)))
	check("put with an unknown lease", err)
	resp, _ = cli.Get(ctx, "go/", clientv3.WithPrefix(), clientv3.WithMinModRev(1), clientv3.WithLimit(2))
	say("limit 2 with a filter: %s more=%v count=%d", pairs(resp), resp.More, resp.Count)
	cli.Delete(ctx, "go/", clientv3.WithPrefix())
	cli.Revoke(ctx, lease.ID)
}

// grantWithID grants a lease whose id the client chooses (clientv3 3.4 has
// no option for it; the raw API does).
func grantWithID(cli *clientv3.Client, id int64, ttl int64) error {
	_, err := pb.NewLeaseClient(cli.ActiveConnection()).LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: ttl, ID: id})
	return err
}

func leases(cli *clientv3.Client) {
	const chosen = clientv3.LeaseID(0x1234abcd)
	other, err := cli.Grant(ctx, 30)
	if !check("grant", err) {
		return
	}
	if check("grant with a chosen id", grantWithID(cli, int64(chosen), 30)) {
		say("granted the chosen id")
	}
	check("grant the same id again", grantWithID(cli, int64(chosen), 30))
	cli.Put(ctx, "go/chosen", "v", clientv3.WithLease(chosen))
	list, err := cli.Leases(ctx)
	if check("leases", err) {
		found := 0
		for _, l := range list.Leases {
			if l.ID == chosen || l.ID == other.ID {
				found++
			}
		}
		say("leases lists both: %v", found == 2)
	}
	ttl, err := cli.TimeToLive(ctx, chosen, clientv3.WithAttachedKeys())
	if check("time to live", err) {
		say("time to live: granted=%d keys=%q", ttl.GrantedTTL, ttl.Keys)
	}
	ka, err := cli.KeepAliveOnce(ctx, chosen)
	if check("keep alive", err) {
		say("keep alive: ttl=%d", ka.TTL)
	}
	cli.Revoke(ctx, chosen)
	cli.Revoke(ctx, other.ID)
	ttl, err = cli.TimeToLive(ctx, chosen)
	if check("time to live after revoke", err) {
		say("after revoke: ttl=%d", ttl.TTL)
	}
	_, err = cli.KeepAliveOnce(ctx, chosen)
	check("keep alive after revoke", err)
	_, err = cli.Revoke(ctx, chosen)
	check("revoke twice", err)
	resp, _ := cli.Get(ctx, "go/chosen")
	say("the lease's key is gone: %v", resp.Count == 0)
}

func watches(cli *clientv3.Client) {
	// Two watches on one stream (clientv3 shares it), one without puts.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	all := cli.Watch(wctx, "gw/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	deletes := cli.Watch(wctx, "gw/", clientv3.WithPrefix(), clientv3.WithFilterPut(), clientv3.WithCreatedNotify())
	<-all
	<-deletes
	cli.Put(ctx, "gw/a", "1")
	cli.Put(ctx, "gw/b", "2")
	cli.Delete(ctx, "gw/a")
	seen := func(ch clientv3.WatchChan, n int) string {
		var events []string
		deadline := time.After(10 * time.Second)
		for len(events) < n {
			select {
			case resp := <-ch:
				if err := resp.Err(); err != nil {
					return "error: " + err.Error()
				}
				for _, ev := range resp.Events {
					events = append(events, fmt.Sprintf("%s %s=%s", ev.Type, ev.Kv.Key, ev.Kv.Value))
				}
			case <-deadline:
				return strings.Join(events, ", ") + " (timed out)"
			}
		}
		return strings.Join(events, ", ")
	}
	say("watch all: %s", seen(all, 3))
	say("watch without puts: %s", seen(deletes, 1))
	check("progress request", cli.RequestProgress(wctx))
	select {
	case resp := <-all:
		say("progress notify: %v events=%d", resp.IsProgressNotify(), len(resp.Events))
	case <-time.After(10 * time.Second):
		say("no progress answer")
	}
	cli.Delete(ctx, "gw/", clientv3.WithPrefix())
}

func mutex(cli *clientv3.Client) {
	s1, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if !check("session", err) {
		return
	}
	defer s1.Close()
	s2, _ := concurrency.NewSession(cli, concurrency.WithTTL(10))
	defer s2.Close()
	m1 := concurrency.NewMutex(s1, "/lock/")
	m2 := concurrency.NewMutex(s2, "/lock/")
	check("m1 lock", m1.Lock(ctx))
	say("m1 holds the lock")
	got := make(chan error, 1)
	go func() { got <- m2.Lock(ctx) }()
	select {
	case <-got:
		say("m2 got the lock while m1 held it")
	case <-time.After(500 * time.Millisecond):
		say("m2 waits while m1 holds the lock")
	}
	lctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err = concurrency.NewMutex(s2, "/lock/").Lock(lctx)
	cancel()
	say("a third contender times out: %v", err == context.DeadlineExceeded)
	check("m1 unlock", m1.Unlock(ctx))
	select {
	case err := <-got:
		if check("m2 lock", err) {
			say("m2 holds the lock after m1 unlocked")
		}
	case <-time.After(10 * time.Second):
		say("m2 never got the lock")
	}
	check("m2 unlock", m2.Unlock(ctx))
}

func election(cli *clientv3.Client) {
	// The leader's session stops keeping its lease alive (a crash): when
	// the lease expires the other candidate takes over.
	s1, err := concurrency.NewSession(cli, concurrency.WithTTL(2))
	if !check("session", err) {
		return
	}
	s2, _ := concurrency.NewSession(cli, concurrency.WithTTL(10))
	defer s2.Close()
	e1 := concurrency.NewElection(s1, "/election/")
	e2 := concurrency.NewElection(s2, "/election/")
	check("campaign 1", e1.Campaign(ctx, "one"))
	octx, cancel := context.WithCancel(ctx)
	defer cancel()
	observed := concurrency.NewElection(s2, "/election/").Observe(octx)
	first := <-observed
	say("observed leader: %s", first.Kvs[0].Value)
	won := make(chan error, 1)
	go func() { won <- e2.Campaign(ctx, "two") }()
	select {
	case <-won:
		say("two won while one led")
	case <-time.After(500 * time.Millisecond):
		say("two waits while one leads")
	}
	check("proclaim", e1.Proclaim(ctx, "one, again"))
	say("observed after proclaim: %s", (<-observed).Kvs[0].Value)
	s1.Orphan() // no more keep-alives: the lease runs out
	select {
	case err := <-won:
		if check("campaign 2", err) {
			leader, _ := e2.Leader(ctx)
			say("after the leader's lease expired, leader: %s", leader.Kvs[0].Value)
		}
	case <-time.After(15 * time.Second):
		say("two never won")
	}
	say("observed the failover: %s", (<-observed).Kvs[0].Value)
	check("resign", e2.Resign(ctx))
	_, err = e2.Leader(ctx)
	say("leader after resigning: %v", err == concurrency.ErrElectionNoLeader)
}

func lockService(cli *clientv3.Client) {
	locks := v3lockpb.NewLockClient(cli.ActiveConnection())
	s1, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if !check("session", err) {
		return
	}
	s2, _ := concurrency.NewSession(cli, concurrency.WithTTL(10))
	defer s2.Close()
	first, err := locks.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("svc-lock"), Lease: int64(s1.Lease())})
	if !check("lock 1", err) {
		return
	}
	say("lock 1 holds a key under the name: %v", strings.HasPrefix(string(first.Key), "svc-lock/"))
	got := make(chan error, 1)
	go func() {
		_, err := locks.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("svc-lock"), Lease: int64(s2.Lease())})
		got <- err
	}()
	select {
	case <-got:
		say("lock 2 got it while lock 1 held it")
	case <-time.After(500 * time.Millisecond):
		say("lock 2 waits")
	}
	s1.Close() // the holder's lease is revoked: the lock passes on
	select {
	case err := <-got:
		if check("lock 2", err) {
			say("lock 2 holds it after the holder's lease went")
		}
	case <-time.After(10 * time.Second):
		say("lock 2 never got it")
	}
	_, err = locks.Unlock(ctx, &v3lockpb.UnlockRequest{Key: first.Key})
	check("unlock a released key", err)
	_, err = locks.Lock(ctx, &v3lockpb.LockRequest{Name: []byte("svc-lock"), Lease: 0x7777})
	check("lock with an unknown lease", err)
}

func electionService(cli *clientv3.Client) {
	elections := v3electionpb.NewElectionClient(cli.ActiveConnection())
	s1, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if !check("session", err) {
		return
	}
	s2, _ := concurrency.NewSession(cli, concurrency.WithTTL(10))
	defer s2.Close()
	won, err := elections.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte("svc-election"), Lease: int64(s1.Lease()), Value: []byte("one")})
	if !check("campaign 1", err) {
		return
	}
	leader, err := elections.Leader(ctx, &v3electionpb.LeaderRequest{Name: []byte("svc-election")})
	if check("leader", err) {
		say("leader: %s", leader.Kv.Value)
	}
	_, err = elections.Proclaim(ctx, &v3electionpb.ProclaimRequest{Leader: won.Leader, Value: []byte("one, again")})
	check("proclaim", err)
	octx, cancel := context.WithCancel(ctx)
	defer cancel()
	observe, err := elections.Observe(octx, &v3electionpb.LeaderRequest{Name: []byte("svc-election")})
	if check("observe", err) {
		first, err := observe.Recv()
		if check("observe recv", err) {
			say("observed: %s", first.Kv.Value)
		}
	}
	second := make(chan error, 1)
	go func() {
		_, err := elections.Campaign(ctx, &v3electionpb.CampaignRequest{Name: []byte("svc-election"), Lease: int64(s2.Lease()), Value: []byte("two")})
		second <- err
	}()
	_, err = elections.Resign(ctx, &v3electionpb.ResignRequest{Leader: won.Leader})
	check("resign", err)
	select {
	case err := <-second:
		if check("campaign 2", err) {
			say("two leads after one resigned")
		}
	case <-time.After(10 * time.Second):
		say("two never led")
	}
	if observe != nil {
		next, err := observe.Recv()
		if check("observe recv", err) {
			say("observed: %s", next.Kv.Value)
		}
	}
	_, err = elections.Proclaim(ctx, &v3electionpb.ProclaimRequest{Leader: won.Leader, Value: []byte("stale")})
	check("proclaim by the old leader", err)
	s1.Close()
}

// history reads at past revisions, watches from one with prev_kv, and
// compacts. Revisions are printed relative to the section's first write.
func history(cli *clientv3.Client) {
	first, err := cli.Put(ctx, "hist/k", "one")
	if !check("put", err) {
		return
	}
	r1 := first.Header.Revision
	cli.Put(ctx, "hist/k", "two")
	cli.Put(ctx, "hist/other", "x")
	cli.Delete(ctx, "hist/k")
	last, _ := cli.Put(ctx, "hist/k", "three")
	r5 := last.Header.Revision
	say("five writes: %d revisions", r5-r1+1)
	for rev := r1; rev <= r5; rev++ {
		resp, err := cli.Get(ctx, "hist/", clientv3.WithPrefix(), clientv3.WithRev(rev))
		if check("get at a revision", err) {
			say("at r1+%d: %s count=%d", rev-r1, pairs(resp), resp.Count)
		}
	}
	if resp, err := cli.Get(ctx, "hist/k", clientv3.WithRev(r1+1)); check("get", err) && len(resp.Kvs) == 1 {
		kv := resp.Kvs[0]
		say("hist/k at r1+1: version=%d created=r1+%d modified=r1+%d", kv.Version, kv.CreateRevision-r1, kv.ModRevision-r1)
	}
	_, err = cli.Get(ctx, "hist/k", clientv3.WithRev(r5+100))
	check("get at a future revision", err)

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	replay := cli.Watch(wctx, "hist/", clientv3.WithPrefix(), clientv3.WithRev(r1), clientv3.WithPrevKV())
	var events []string
	deadline := time.After(10 * time.Second)
	for len(events) < 5 {
		select {
		case resp := <-replay:
			if err := resp.Err(); err != nil {
				say("replay: error: %v", err)
				return
			}
			for _, ev := range resp.Events {
				prev := "none"
				if ev.PrevKv != nil {
					prev = string(ev.PrevKv.Value)
				}
				events = append(events, fmt.Sprintf("%s %s=%s (prev %s)", ev.Type, ev.Kv.Key, ev.Kv.Value, prev))
			}
		case <-deadline:
			say("replay timed out after %v", events)
			return
		}
	}
	say("replay with prev_kv: %s", strings.Join(events, ", "))

	if _, err := cli.Compact(ctx, r1+2); check("compact", err) {
		say("compacted at r1+2")
	}
	_, err = cli.Get(ctx, "hist/k", clientv3.WithRev(r1+1))
	check("get below the compaction", err)
	if resp, err := cli.Get(ctx, "hist/", clientv3.WithPrefix(), clientv3.WithRev(r1+2)); check("get at the compaction", err) {
		say("at r1+2 after compaction: %s", pairs(resp))
	}
	_, err = cli.Compact(ctx, r1+1)
	check("compact below the compaction", err)
	_, err = cli.Compact(ctx, r5+100)
	check("compact at a future revision", err)
	gone := cli.Watch(wctx, "hist/", clientv3.WithPrefix(), clientv3.WithRev(r1))
	select {
	case resp := <-gone:
		say("watch from a compacted revision: canceled=%v compact_revision=r1+%d err=%v",
			resp.Canceled, resp.CompactRevision-r1, resp.Err())
	case <-time.After(10 * time.Second):
		say("watch from a compacted revision: no answer")
	}
	cli.Delete(ctx, "hist/", clientv3.WithPrefix())
}

// paging lists 100,000 keys in pages of 10,000 at the first page's revision
// while a writer changes, deletes and adds keys under the same prefix: the
// union of the pages must be exactly the keyspace at that revision, each
// key with the value it had then (etcd's way of paging a large range, as
// Kubernetes' informers do). The keys stay: the test's servers are its own.
func paging(cli *clientv3.Client) {
	const keys, batch, pageSize = 100000, 100, 10000
	key := func(i int) string { return fmt.Sprintf("page/%06d", i) }
	// Loaded by 16 writers of 100-put transactions (etcd's limit is 128).
	const writers = 16
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		go func(w int) {
			for start := w * batch; start < keys; start += writers * batch {
				var ops []clientv3.Op
				for i := start; i < start+batch; i++ {
					ops = append(ops, clientv3.OpPut(key(i), "v0-"+key(i)))
				}
				if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}(w)
	}
	for w := 0; w < writers; w++ {
		if !check("load", <-errs) {
			return
		}
	}
	// Between pages a writer overwrites and deletes keys already listed and
	// not yet listed, and adds keys between them.
	write := func(n int) error {
		i := (n * 7919) % keys
		var err error
		switch n % 3 {
		case 0:
			_, err = cli.Put(ctx, key(i), "changed")
		case 1:
			_, err = cli.Delete(ctx, key(i))
		default:
			_, err = cli.Put(ctx, key(i)+"-new", "added")
		}
		return err
	}
	var rev int64
	listed, wrong, pages, writes := 0, 0, 0, 0
	from := key(0)
	end := clientv3.GetPrefixRangeEnd("page/")
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(pageSize)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := cli.Get(ctx, from, opts...)
		if !check("page", err) {
			return
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		pages++
		for _, kv := range resp.Kvs {
			if string(kv.Key) != key(listed) || string(kv.Value) != "v0-"+key(listed) {
				wrong++
			}
			listed++
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		for j := 0; j < 3; j++ {
			if !check("write", write(writes)) {
				return
			}
			writes++
		}
	}
	say("paged at one revision: %d keys in %d pages, %d not as at the first page; %d writes between pages",
		listed, pages, wrong, writes)
}

func main() {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{os.Args[1]}, DialTimeout: 5 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer cli.Close()
	sections := map[string]func(*clientv3.Client){
		"kv": kvAndTxn, "leases": leases, "watches": watches, "mutex": mutex,
		"election": election, "lock-service": lockService, "election-service": electionService, "history": history,
		"paging": paging,
	}
	for _, name := range os.Args[2:] {
		say("== %s", name)
		sections[name](cli)
	}
}
