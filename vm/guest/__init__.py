"""Guest-side scripts shipped in the initramfs (package data)."""
