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
	"sync"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
	"go.etcd.io/etcd/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/etcdserver/api/v3lock/v3lockpb"
	"go.etcd.io/etcd/etcdserver/api/v3rpc/rpctypes"
	pb "go.etcd.io/etcd/etcdserver/etcdserverpb"
	"google.golang.org/grpc"
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

// rawWatch opens etcd's Watch stream itself (not clientv3's watcher, which
// reads and buffers everything), so a section sees each answer as sent and
// can stop reading.
func rawWatch(cli *clientv3.Client) (pb.Watch_WatchClient, context.CancelFunc) {
	wctx, cancel := context.WithCancel(ctx)
	stream, err := pb.NewWatchClient(cli.ActiveConnection()).Watch(wctx, grpc.MaxCallRecvMsgSize(1<<30))
	if err != nil {
		fmt.Fprintln(os.Stderr, "watch stream:", err)
		os.Exit(1)
	}
	return stream, cancel
}

func createRequest(c *pb.WatchCreateRequest) *pb.WatchRequest {
	return &pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: c}}
}

// watchLag: four watches on one stream (live, from the past, prev_kv with a
// filter, one starting later in the past) that stops reading while 1,500
// writes of two 4 KiB values each go by (far past the server's broadcast
// buffer, short of --watch-max-lag), then reads: every watch must get every
// revision of its range exactly once, in order, each revision's events in
// one answer, and prev_kv right.
func watchLag(cli *clientv3.Client) {
	const history, writes = 300, 1500
	var base int64
	for i := 0; i < history; i++ {
		r, err := cli.Put(ctx, "wl/b", fmt.Sprintf("b%d", i))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if i == 0 {
			base = r.Header.Revision
		}
	}
	stream, cancel := rawWatch(cli)
	defer cancel()
	end := []byte("wl0")
	creates := []*pb.WatchCreateRequest{
		{Key: []byte("wl/"), RangeEnd: end},
		{Key: []byte("wl/"), RangeEnd: end, StartRevision: base},
		{Key: []byte("wl/a"), PrevKv: true, Filters: []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NODELETE}},
		{Key: []byte("wl/c"), StartRevision: base + 100},
	}
	type seen struct {
		rev        int64
		key, value string
		prev       string
		answer     int
	}
	events := map[int64][]seen{}
	start := map[int64]int64{}
	answers := 0
	take := func(resp *pb.WatchResponse) {
		answers++
		if resp.Created {
			start[resp.WatchId] = resp.Header.Revision + 1
			return
		}
		for _, ev := range resp.Events {
			prev := "none"
			if ev.PrevKv != nil {
				prev = string(ev.PrevKv.Value)
			}
			events[resp.WatchId] = append(events[resp.WatchId], seen{ev.Kv.ModRevision, string(ev.Kv.Key), string(ev.Kv.Value), prev, answers})
		}
	}
	for _, c := range creates {
		stream.Send(createRequest(c))
	}
	for len(start) < len(creates) {
		resp, err := stream.Recv()
		if err != nil {
			fmt.Fprintln(os.Stderr, "recv:", err)
			os.Exit(1)
		}
		take(resp)
	}
	// Not read from here on while the writes go by.
	big := strings.Repeat("x", 4096)
	revs := make([]int64, writes)
	for i := 0; i < writes; i++ {
		r, err := cli.Txn(ctx).Then(
			clientv3.OpPut("wl/a", fmt.Sprintf("a%d-%s", i, big)),
			clientv3.OpPut("wl/c", fmt.Sprintf("c%d-%s", i, big)),
		).Commit()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		revs[i] = r.Header.Revision
	}
	last := revs[writes-1]
	done := func() bool {
		for id := range start {
			list := events[id]
			if len(list) == 0 || list[len(list)-1].rev < last {
				return false
			}
		}
		return true
	}
	got := make(chan *pb.WatchResponse)
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				fmt.Fprintln(os.Stderr, "watch lag: recv:", err)
				close(got)
				return
			}
			got <- resp
		}
	}()
	deadline := time.After(60 * time.Second)
	for !done() {
		select {
		case resp, ok := <-got:
			if !ok {
				say("watch lag: the stream ended")
				return
			}
			if resp.Canceled {
				say("watch lag: watch %d canceled: %s", resp.WatchId, resp.CancelReason)
				return
			}
			take(resp)
		case <-deadline:
			say("watch lag: timed out")
			return
		}
	}
	// What each watch should have seen: (revision, key) in order.
	type want struct {
		rev int64
		key string
	}
	expected := func(id int64) []want {
		var w []want
		c := creates[id]
		from := c.StartRevision
		if from == 0 {
			from = start[id]
		}
		in := func(key string) bool {
			if len(c.RangeEnd) == 0 {
				return key == string(c.Key)
			}
			return key >= string(c.Key) && key < string(c.RangeEnd)
		}
		for i := 0; i < history; i++ {
			if base+int64(i) >= from && in("wl/b") {
				w = append(w, want{base + int64(i), "wl/b"})
			}
		}
		for _, r := range revs {
			for _, k := range []string{"wl/a", "wl/c"} {
				if r >= from && in(k) {
					w = append(w, want{r, k})
				}
			}
		}
		return w
	}
	for id := int64(0); id < int64(len(creates)); id++ {
		list := events[id]
		want := expected(id)
		missing, extra, split, prevWrong := 0, 0, 0, 0
		i, j := 0, 0
		for i < len(list) && j < len(want) {
			if list[i].rev == want[j].rev && list[i].key == want[j].key {
				i++
				j++
			} else if list[i].rev < want[j].rev || (list[i].rev == want[j].rev && list[i].key < want[j].key) {
				extra++
				i++
			} else {
				missing++
				j++
			}
		}
		extra += len(list) - i
		missing += len(want) - j
		for k := 1; k < len(list); k++ {
			if list[k].rev == list[k-1].rev && list[k].answer != list[k-1].answer {
				split++
			}
		}
		if creates[id].PrevKv {
			prev := "none"
			for _, e := range list {
				if e.prev != prev {
					if prevWrong == 0 {
						fmt.Fprintf(os.Stderr, "prev_kv at %d: %.12q, want %.12q\n", e.rev, e.prev, prev)
					}
					prevWrong++
				}
				prev = e.value
			}
		}
		say("watch lag: watch %d: %d events, %d missing, %d duplicate or out of order, %d revisions split across answers, %d prev_kv wrong",
			id, len(list), missing, extra, split, prevWrong)
	}
}

// watchCreatedRevision: while puts to one key go on, a watch of that key
// from now (no start revision) is created again and again on a stream of
// its own; its first event must be at the created answer's revision + 1
// (etcd watches from the revision it answers, clientv3 resumes from it).
func watchCreatedRevision(cli *clientv3.Client) {
	wctx, stop := context.WithCancel(ctx)
	var writers sync.WaitGroup
	for w := 0; w < 3; w++ {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for wctx.Err() == nil {
				cli.Put(wctx, "wc/k", "v")
			}
		}()
	}
	const rounds = 300
	gaps, repeats := 0, 0
	for i := 0; i < rounds; i++ {
		stream, cancel := rawWatch(cli)
		stream.Send(createRequest(&pb.WatchCreateRequest{Key: []byte("wc/k")}))
		created, err := stream.Recv()
		if err != nil || !created.Created {
			say("watch created revision: no created answer: %v", err)
			cancel()
			break
		}
		first := int64(0)
		for first == 0 {
			resp, err := stream.Recv()
			if err != nil {
				break
			}
			if len(resp.Events) > 0 {
				first = resp.Events[0].Kv.ModRevision
			}
		}
		cancel()
		if first > created.Header.Revision+1 {
			gaps++
			if gaps <= 3 {
				fmt.Fprintf(os.Stderr, "created at %d, first event at %d\n", created.Header.Revision, first)
			}
		} else if first <= created.Header.Revision {
			repeats++
		}
	}
	stop()
	writers.Wait()
	say("watch created revision: %d of %d watches missed revisions after their created revision, %d began at or before it", gaps, rounds, repeats)
}

// watchProgressOrder: a watch replaying 2,000 revisions, and a progress
// request sent at once: no event at or below the revision a progress
// answer names may come after it (etcd >= 3.4.24 defers the answer until
// the watches caught up; 3.4.23 does not).
func watchProgressOrder(cli *clientv3.Client) {
	const history = 2000
	var first, last int64
	for i := 0; i < history; i++ {
		r, err := cli.Put(ctx, "wp/k", fmt.Sprintf("%d", i))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if i == 0 {
			first = r.Header.Revision
		}
		last = r.Header.Revision
	}
	stream, cancel := rawWatch(cli)
	defer cancel()
	stream.Send(createRequest(&pb.WatchCreateRequest{Key: []byte("wp/k"), StartRevision: first}))
	stream.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}})
	progress := int64(0)
	late, seen := 0, int64(0)
	for seen < last {
		resp, err := stream.Recv()
		if err != nil {
			say("watch progress order: %v", err)
			return
		}
		if !resp.Created && !resp.Canceled && len(resp.Events) == 0 && progress == 0 {
			progress = resp.Header.Revision
		}
		for _, ev := range resp.Events {
			seen = ev.Kv.ModRevision
			if progress != 0 && ev.Kv.ModRevision <= progress {
				late++
			}
		}
	}
	say("watch progress order: %d events at or below a progress answer's revision came after it", late)
}

// watchStalledReader: one client's watch stream is not read while another
// client, on a connection of its own, writes 1,000 values of 8 KiB under
// the watched prefix: a stream that does not read may be cut off, but the
// other client's writes must all succeed.
func watchStalledReader(cli *clientv3.Client) {
	stream, cancel := rawWatch(cli)
	defer cancel()
	for i := 0; i < 4; i++ {
		stream.Send(createRequest(&pb.WatchCreateRequest{Key: []byte("ws/"), RangeEnd: []byte("ws0")}))
		if _, err := stream.Recv(); err != nil {
			say("stalled reader: %v", err)
			return
		}
	}
	other, err := clientv3.New(clientv3.Config{Endpoints: []string{os.Args[1]}, DialTimeout: 5 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer other.Close()
	value := strings.Repeat("v", 8192)
	const writes = 1000
	failed := 0
	for i := 0; i < writes; i++ {
		pctx, done := context.WithTimeout(ctx, 10*time.Second)
		_, err := other.Put(pctx, "ws/k", value)
		done()
		if err != nil {
			if failed == 0 {
				fmt.Fprintf(os.Stderr, "stalled reader: put %d: %v\n", i, err)
			}
			failed++
			if failed == 3 {
				break
			}
		}
	}
	say("stalled reader: %d puts of another client failed", failed)
	// Read again: every watch gets every revision written (a kvserver may
	// have cut the stream off instead, which it says).
	r, err := other.Get(ctx, "ws/k")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	last := r.Header.Revision
	reached := map[int64]bool{}
	got := make(chan *pb.WatchResponse, 16)
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				fmt.Fprintln(os.Stderr, "stalled reader: recv:", err)
				close(got)
				return
			}
			got <- resp
		}
	}()
	deadline := time.After(30 * time.Second)
	for len(reached) < 4 {
		select {
		case resp, ok := <-got:
			if !ok {
				say("stalled reader: the stream ended")
				return
			}
			if resp.Canceled {
				say("stalled reader: watch %d canceled: %s", resp.WatchId, resp.CancelReason)
				return
			}
			for _, ev := range resp.Events {
				if ev.Kv.ModRevision >= last {
					reached[resp.WatchId] = true
				}
			}
		case <-deadline:
			say("stalled reader: after reading again, %d of 4 watches got the last write within 30 s", len(reached))
			return
		}
	}
	say("stalled reader: after reading again, every watch got the last write")
}

// watchCancelCompact: two watches of one prefix on a stream that is not
// read while 600 writes of 8 KiB go by; then watch 0 is cancelled and the
// history compacted to the newest revision, and the stream read: watch 0
// gets its events in order, its canceled answer, and nothing after it;
// watch 1 its events in order without a gap, until the newest revision or
// a cancel naming a compacted revision past the last event it got.
func watchCancelCompact(cli *clientv3.Client) {
	stream, cancel := rawWatch(cli)
	defer cancel()
	start := map[int64]int64{}
	for i := 0; i < 2; i++ {
		stream.Send(createRequest(&pb.WatchCreateRequest{Key: []byte("wx/"), RangeEnd: []byte("wx0")}))
		resp, err := stream.Recv()
		if err != nil || !resp.Created {
			say("cancel compact: no created answer: %v", err)
			return
		}
		start[resp.WatchId] = resp.Header.Revision + 1
	}
	value := strings.Repeat("v", 8192)
	var last int64
	for i := 0; i < 600; i++ {
		r, err := cli.Put(ctx, "wx/k", value)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		last = r.Header.Revision
	}
	stream.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: 0}}})
	if _, err := cli.Compact(ctx, last); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	next := map[int64]int64{0: start[0], 1: start[1]}
	gaps := map[int64]int{}
	canceled := map[int64]bool{}
	after := 0
	compactedRight := true
	ended1 := ""
	deadline := time.Now().Add(60 * time.Second)
	for !(canceled[0] && (canceled[1] || next[1] > last)) && time.Now().Before(deadline) {
		resp, err := stream.Recv()
		if err != nil {
			say("cancel compact: %v", err)
			return
		}
		id := resp.WatchId
		if resp.Canceled {
			canceled[id] = true
			if id == 1 {
				ended1 = "compacted"
				if resp.CompactRevision <= next[1]-1 || resp.CompactRevision > last {
					compactedRight = false
				}
			}
			continue
		}
		for _, ev := range resp.Events {
			if canceled[id] {
				after++
			}
			if ev.Kv.ModRevision != next[id] {
				gaps[id]++
			}
			next[id] = ev.Kv.ModRevision + 1
		}
	}
	if ended1 == "" {
		ended1 = "every event"
	}
	fmt.Fprintf(os.Stderr, "cancel compact: watch 1 ended with %s\n", ended1)
	say("cancel compact: watch 0 canceled %v, %d out of order or missing, %d events after its cancel", canceled[0], gaps[0], after)
	say("cancel compact: watch 1 %d out of order or missing, reached the end or a right compact_revision %v", gaps[1], compactedRight && (canceled[1] || next[1] > last))
}

// watchHandover: while two-key writes go on, 40 watches are added to one
// stream, read all along, from a revision in the past (replayed, then
// live) or about the newest, some of one key: each must get every revision of
// its range from its start exactly once, in order.
func watchHandover(cli *clientv3.Client) {
	const writes = 1500
	revs := make([]int64, 0, writes)
	var mu sync.Mutex
	wrote := make(chan struct{})
	r, err := cli.Put(ctx, "wh/a", "first")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	first := r.Header.Revision
	go func() {
		defer close(wrote)
		for i := 0; i < writes; i++ {
			r, err := cli.Txn(ctx).Then(
				clientv3.OpPut("wh/a", fmt.Sprintf("a%d", i)),
				clientv3.OpPut("wh/b", fmt.Sprintf("b%d", i)),
			).Commit()
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			mu.Lock()
			revs = append(revs, r.Header.Revision)
			mu.Unlock()
		}
	}()
	stream, cancel := rawWatch(cli)
	defer cancel()
	type watch struct {
		key, end []byte
		from     int64
		got      []int64
		keys     []string
	}
	var watches []*watch
	responses := make(chan *pb.WatchResponse, 1024)
	go func() {
		for {
			resp, err := stream.Recv()
			if err != nil {
				close(responses)
				return
			}
			responses <- resp
		}
	}()
	byID := map[int64]*watch{}
	pending := []*watch{}
	take := func(resp *pb.WatchResponse) {
		if resp.Created {
			w := pending[0]
			pending = pending[1:]
			if w.from == 0 {
				w.from = resp.Header.Revision + 1
			}
			byID[resp.WatchId] = w
			return
		}
		w := byID[resp.WatchId]
		for _, ev := range resp.Events {
			w.got = append(w.got, ev.Kv.ModRevision)
			w.keys = append(w.keys, string(ev.Kv.Key))
		}
	}
	for i := 0; i < 40; i++ {
		time.Sleep(15 * time.Millisecond)
		mu.Lock()
		n := len(revs)
		mu.Unlock()
		w := &watch{key: []byte("wh/"), end: []byte("wh0")}
		switch i % 4 {
		case 0:
			// At the newest revision or just past it (a watch from now
			// is the watch-created-revision section's).
			w.from = first + int64(n) + 1
		case 1:
			w.from = first + int64(i)
		case 2:
			w.key, w.end = []byte("wh/a"), nil
			w.from = first + int64(n/2)
		case 3:
			w.from = first + int64(n) - 3
			if w.from < first {
				w.from = first
			}
		}
		watches = append(watches, w)
		pending = append(pending, w)
		stream.Send(createRequest(&pb.WatchCreateRequest{Key: w.key, RangeEnd: w.end, StartRevision: w.from}))
		for len(responses) > 0 {
			take(<-responses)
		}
	}
	// Read on while the writes go on.
	for writing := true; writing; {
		select {
		case <-wrote:
			writing = false
		case resp, ok := <-responses:
			if !ok {
				say("handover: the stream ended")
				return
			}
			take(resp)
		}
	}
	last := revs[len(revs)-1]
	deadline := time.After(60 * time.Second)
	done := func() bool {
		if len(pending) > 0 {
			return false
		}
		for _, w := range watches {
			if len(w.got) == 0 || w.got[len(w.got)-1] < last {
				return false
			}
		}
		return true
	}
	for !done() {
		select {
		case resp, ok := <-responses:
			if !ok {
				say("handover: the stream ended")
				return
			}
			take(resp)
		case <-deadline:
			say("handover: timed out")
			fmt.Fprintf(os.Stderr, "handover: %d created answers missing, last revision %d\n", len(pending), last)
			for i, w := range watches {
				if len(w.got) == 0 || w.got[len(w.got)-1] < last {
					at := int64(0)
					if len(w.got) > 0 {
						at = w.got[len(w.got)-1]
					}
					fmt.Fprintf(os.Stderr, "  watch %d from %d: %d events, up to %d\n", i, w.from, len(w.got), at)
				}
			}
			return
		}
	}
	wrong := 0
	for i, w := range watches {
		var want []string
		if first >= w.from {
			want = append(want, fmt.Sprintf("%d wh/a", first))
		}
		for _, r := range revs {
			if r >= w.from {
				want = append(want, fmt.Sprintf("%d wh/a", r))
				if w.end != nil {
					want = append(want, fmt.Sprintf("%d wh/b", r))
				}
			}
		}
		var got []string
		for j := range w.got {
			got = append(got, fmt.Sprintf("%d %s", w.got[j], w.keys[j]))
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			wrong++
			if wrong <= 3 {
				fmt.Fprintf(os.Stderr, "handover: watch %d from %d: got %d events, want %d\n", i, w.from, len(got), len(want))
				for j := 0; j < len(got) && j < len(want); j++ {
					if got[j] != want[j] {
						fmt.Fprintf(os.Stderr, "  first difference at %d: got %s want %s\n", j, got[j], want[j])
						break
					}
				}
			}
		}
	}
	say("handover: %d of %d watches did not get exactly their events", wrong, len(watches))
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
		"paging":    paging,
		"watch-lag": watchLag, "watch-created-revision": watchCreatedRevision, "watch-progress-order": watchProgressOrder,
		"watch-stalled-reader": watchStalledReader, "watch-cancel-compact": watchCancelCompact,
		"watch-handover": watchHandover,
	}
	for _, name := range os.Args[2:] {
		say("== %s", name)
		sections[name](cli)
	}
}
