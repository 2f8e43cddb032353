//! The transport: listener, Noise handshake, framing, connection pool, queues, shutdown.
