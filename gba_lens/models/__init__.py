"""Small offline models shipped with gba_lens (tests, tutorials and the offline defaults use them)."""
