/// The replicas' shared secret in tests: as long as a node requires (32 bytes or more).
public let testSecret = "test-replica-secret-of-32-bytes-or-more"

/// Another valid secret, for a node that must not get in.
public let otherSecret = "another-replica-secret-of-32-bytes-or-more"
