"""Edge fleets: enrollment, device desired state and heartbeats, staged fleet rollouts."""
