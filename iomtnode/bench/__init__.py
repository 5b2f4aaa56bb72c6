"""`iomtnode bench`: a localnet of real processes measured against this machine's ceiling."""
