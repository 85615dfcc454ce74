"""The per-transaction relay path of transaction pooling, compiled (``proxy.relay.core``)."""
