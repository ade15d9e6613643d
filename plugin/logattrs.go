package plugin

import (
	"cmp"
	"log/slog"
	"math"
	"slices"
)

// DurationsAsMillis is a slog ReplaceAttr that writes a duration attribute "took" as
// "took_ms", a number of milliseconds (three decimals), so JSON log lines carry numbers a
// log pipeline can compare, not "2.3ms" strings or nanoseconds. Host and plugin use it.
func DurationsAsMillis(groups []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() != slog.KindDuration {
		return a
	}
	ms := float64(a.Value.Duration()) / 1e6
	return slog.Float64(a.Key+"_ms", math.Round(ms*1000)/1000)
}

// sortedPairs returns key-value args ordered by key, so the plugin's lines (which go-plugin
// hands over from a JSON object, in random order) have the same field order every time.
func sortedPairs(args []any) []any {
	type kv struct {
		k string
		v any
	}
	var pairs []kv
	var rest []any
	for i := 0; i+1 < len(args); i += 2 {
		k, ok := args[i].(string)
		if !ok {
			rest = append(rest, args[i], args[i+1])
			continue
		}
		pairs = append(pairs, kv{k, args[i+1]})
	}
	slices.SortStableFunc(pairs, func(a, b kv) int { return cmp.Compare(a.k, b.k) })
	out := make([]any, 0, len(args))
	for _, p := range pairs {
		out = append(out, p.k, wholeNumber(p.v))
	}
	return append(out, rest...)
}

// wholeNumber turns a float64 holding a whole number (go-plugin decodes every JSON number of
// the plugin's lines as float64) back into an int64, so ids and counts print as 1000002, not
// 1.000002e+06.
func wholeNumber(v any) any {
	f, ok := v.(float64)
	if !ok || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return v
	}
	return int64(f)
}
