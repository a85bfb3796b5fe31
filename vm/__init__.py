"""QEMU machines, kernels, guest root, networking, SSH. Knows kernels, not filesystems."""
