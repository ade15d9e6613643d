// Package tokenmgr keeps platform access tokens fresh: it refreshes them ahead of expiry in the
// background, early enough for how long its fetches take, makes one upstream fetch per key however many goroutines (or, with a shared
// [Store], processes) need it, drops a token the platform rejected only if it is still the
// current one, and never puts a token or secret in a log line or an error.
//
// A [Manager] collapses concurrent refreshes with its own in-flight record rather than
// golang.org/x/sync/singleflight, because the record is part of the Manager's state, read and
// changed under the same mutex as the token: it carries why the refresh runs (initial, ahead,
// expired, invalidated), the generation it started from, an invalidation to apply first and
// the invalidation count when its fetch began (so a token rejected meanwhile is not handed
// out); Status reports "refreshing" from it, and Invalidate and a [Store] change decide from
// it whether to start a refresh. A singleflight.Group would hold none of that and would add a
// second lock whose order against the Manager's mutex matters. Waiters still leave when their
// ctx ends while the shared refresh finishes, as with singleflight's DoChan. The stores'
// per-key locks, which only need "one at a time, waiting honours ctx", are
// golang.org/x/sync/semaphore.Weighted.
package tokenmgr
