"""Security tests: onboarding, audit, erase, hostile input (marker `security`)."""
