package filestore

import "context"

// DeleteState removes key's state from the file (re-read under the lock, so the keys other
// processes wrote meanwhile are kept). A missing key is no error.
func (s *Store) DeleteState(key string) error {
	return s.locked(context.Background(), func() error {
		disk, err := s.read()
		if err != nil {
			return err
		}
		if _, ok := disk[key]; !ok {
			delete(s.state, key)
			return nil
		}
		delete(disk, key)
		if err := s.write(disk); err != nil {
			return err
		}
		delete(s.state, key)
		return nil
	})
}
