package main

import (
	"cmp"
	"runtime/debug"
	"strings"
)

// buildVersion returns the version and VCS revision of this binary: the -ldflags version if
// one was set, else the module version Go stamped from the checkout (e.g.
// "v0.0.0-20261204201500-16417ae1b2c3+dirty"); the revision is the commit, with "-dirty" when
// the checkout had uncommitted changes. Go stamps neither with -buildvcs=false nor in a git
// worktree (its .git is a file): `make build` then sets both with -ldflags. Without any, the
// version is "(devel)" and the revision "unknown", never a made-up version.
func buildVersion() (ver, rev string) {
	return versionFrom(debug.ReadBuildInfo())
}

// revision is set at build time with -ldflags "-X main.revision=$(git rev-parse HEAD)" (make
// build); empty: the VCS revision Go stamped, if any.
var revision string

func versionFrom(bi *debug.BuildInfo, ok bool) (ver, rev string) {
	ver, rev = version, cmp.Or(revision, "unknown")
	if !ok {
		if ver == "dev" {
			ver = "(devel)"
		}
		return ver, rev
	}
	var modified bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			if revision == "" {
				rev = s.Value
			}
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if modified && revision == "" && rev != "unknown" {
		rev += "-dirty"
	}
	if ver == "dev" { // not set with -ldflags
		ver = bi.Main.Version
		if ver == "" || ver == "(devel)" {
			ver = "(devel)"
			if rev != "unknown" {
				ver = "(devel) " + strings.TrimSuffix(rev, "-dirty")
			}
		}
	}
	return ver, rev
}
