package main

import (
	"runtime/debug"
	"strings"
)

// buildVersion returns the version and VCS revision of this binary: the -ldflags version if
// one was set, else the module version Go stamped from the checkout (e.g.
// "v0.0.0-20261204201500-16417ae1b2c3+dirty"); the revision is the commit, with "-dirty" when
// the checkout had uncommitted changes. Without build information (a test binary) both say
// "unknown" rather than a made-up version.
func buildVersion() (ver, revision string) {
	ver, revision = version, "unknown"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		if ver == "dev" {
			ver = "unknown"
		}
		return ver, revision
	}
	var modified bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if modified && revision != "unknown" {
		revision += "-dirty"
	}
	if ver == "dev" { // not set with -ldflags
		ver = bi.Main.Version
		if ver == "" || ver == "(devel)" {
			ver = "(devel)"
			if revision != "unknown" {
				ver = "(devel) " + strings.TrimSuffix(revision, "-dirty")
			}
		}
	}
	return ver, revision
}
