"""How a fault reaches a weight: quantization, the memory image and its mapping onto a chip, fault
draws, and the two backends that apply them (numba kernels on CPU, torch ops on any device)."""
