"""The btrfs tool commands (``fsoracle btrfs ...``): mkfs, dump, check, convert and
predict-mount over images, the model's counterparts of btrfs-progs."""
