"""The multi-step SNN engine: simulate a feed-forward spiking network one layer at a time over all
time steps, instead of all layers one step at a time.

- `encoding`: rate coding into spike trains from a counter-based stream (encoding is separate;
  the networks simulate given spike trains).
- `synapses`: the synaptic current of spikes over any (T*B, ...) batch in one exact product (a
  fixed summation order: a row gives the same bits in any batch, on any thread count), with
  gradients for training; a convolution and its 2x2 max pooling fused.
- `lif`: a layer of snntorch-compatible LIF neurons over all T steps in one kernel, with the
  surrogate-gradient backward.
- `wta`: the Diehl & Cook winner-take-all dynamics and the STDP change of a presentation.

The models (`sramsim.nn.models.snn`, `.diehl_cook`) run on it by default (`engine="layer"`) and
keep their step loops as the reference (`engine="step"`): given the same input spikes both give
the same spikes, counts and scores bit for bit. CPU float32 runs numba kernels (compiled with
cache=True); other devices run the same float ops as torch code.
"""
