"""`make demo`: snap's main job on a throwaway fleet on loopback."""
