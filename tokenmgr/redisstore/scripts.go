package redisstore

import "github.com/redis/go-redis/v9"

// An entry is a hash at <prefix>{<key>} with the fields
//
//	gen  the generation, decimal; an absent field counts as 0
//	tok  the token (value, expiry, issue time), encoded by codec
//	st   the source state, encoded by codec; absent when there is none
//
// Every script touches one key, so a script runs on the key's Cluster node. PUBLISH inside a
// script is allowed in Cluster too; the message reaches subscribers on every node.

// foreignLua defines foreign(v, ids): whether the stored field v is sealed ('e' + 8-byte key id
// + …) with a key whose id is not among ids, the 8-byte ids of the caller's keys concatenated
// ("" for a Store without keys). A Store never replaces or deletes such a field: it belongs to
// hosts that have the key (see codec.go for the format; errForeign is the same test in Go).
const foreignLua = `
local function foreign(v, ids)
	if not v or #v < 9 or string.sub(v, 1, 1) ~= 'e' then return false end
	local id = string.sub(v, 2, 9)
	for i = 1, #ids, 8 do
		if string.sub(ids, i, i + 7) == id then return false end
	end
	return true
end
`

// writeScript replaces the entry if its condition holds and no field of it is sealed with a key
// the writer lacks, then publishes msg.
//
//	KEYS[1] entry key
//	ARGV[1] "eq": write only if the stored gen equals ARGV[2] (a fetch based on that gen)
//	        "lt": write only if the stored gen is less than ARGV[3] (a write-back after an outage)
//	ARGV[2] expected gen  ARGV[3] new gen  ARGV[4] tok  ARGV[5] st ("" = none)
//	ARGV[6] TTL in ms ("0" = none)  ARGV[7] channel  ARGV[8] message
//	ARGV[9] the writer's key ids (see foreignLua)
//
// It returns 1 if it wrote, 0 if the generation condition failed, 2 if the stored entry is
// sealed with a key the writer lacks.
var writeScript = redis.NewScript(foreignLua + `
local g = redis.call('HGET', KEYS[1], 'gen') or '0'
local ok
if ARGV[1] == 'lt' then
	ok = tonumber(g) < tonumber(ARGV[3])
else
	ok = g == ARGV[2]
end
if not ok then return 0 end
local f = redis.call('HMGET', KEYS[1], 'tok', 'st')
if foreign(f[1], ARGV[9]) or foreign(f[2], ARGV[9]) then return 2 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'gen', ARGV[3], 'tok', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'st', ARGV[5]) end
local ttl = tonumber(ARGV[6])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
redis.call('PUBLISH', ARGV[7], ARGV[8])
return 1
`)

// invalidateScript deletes the token of the entry if its gen is still ARGV[1], keeping gen and
// state, and publishes the invalidation. It leaves an entry sealed with a key the caller lacks
// alone: the caller never used that token.
//
//	KEYS[1] entry key  ARGV[1] gen  ARGV[2] channel  ARGV[3] message  ARGV[4] the caller's key ids
//
// It returns 1 if it deleted a token, 2 if the entry is sealed with a key the caller lacks,
// else 0.
var invalidateScript = redis.NewScript(foreignLua + `
if (redis.call('HGET', KEYS[1], 'gen') or '0') ~= ARGV[1] then return 0 end
local f = redis.call('HMGET', KEYS[1], 'tok', 'st')
if foreign(f[1], ARGV[4]) or foreign(f[2], ARGV[4]) then return 2 end
if redis.call('HDEL', KEYS[1], 'tok') == 0 then return 0 end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
`)

// releaseScript deletes the lock if ARGV[1] still owns it (compare-and-delete, as in
// bsm/redislock), and publishes ARGV[3] so waiters learn at once that the lock is free or that
// the fetch failed.
//
//	KEYS[1] lock key  ARGV[1] owner  ARGV[2] channel  ARGV[3] message
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
`)

// extendScript extends the lease by ARGV[2] ms if ARGV[1] still owns the lock.
//
//	KEYS[1] lock key  ARGV[1] owner  ARGV[2] lease in ms
var extendScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
`)
