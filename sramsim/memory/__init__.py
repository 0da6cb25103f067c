"""What a memory is and how it fails: geometry, voltage->BER curves, chips (per-bit failure maps
over voltage), random errors and HDF5 profiles. Imports nothing from the layers above."""
