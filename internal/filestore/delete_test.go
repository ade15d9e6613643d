package filestore

import "testing"

// TestDeleteState: a deleted key is gone from memory and from the file (a new Store on the
// directory does not see it), and the other keys stay.
func TestDeleteState(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetState("a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := s.SetState("b", []byte("2")); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteState("a"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteState("missing"); err != nil {
		t.Errorf("deleting a missing key: %v", err)
	}
	if s.State("a") != nil {
		t.Error("deleted key still in memory")
	}
	again, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.State("a") != nil || string(again.State("b")) != "2" {
		t.Errorf("after reopening: a=%q b=%q; want a gone, b kept", again.State("a"), again.State("b"))
	}
}
