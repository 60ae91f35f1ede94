"""Generated protocol stubs (see protos/). Produced by `make gen`; never edit by hand."""
