"""Privacy protection of stored images: faces and licence plates blurred (``its.privacy.blur``)."""
