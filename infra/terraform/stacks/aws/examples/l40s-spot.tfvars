# L40S cluster on spot: g6e instances (1x L40S 48GB per xlarge/2xlarge, 4x per 12xlarge), several sizes
# so spot capacity is easier to find. Spot nodes can be reclaimed with two minutes' notice; redraft jobs
# resume from their checkpoints/ state on the next attempt. A small on-demand group serves traffic.
region        = "us-west-2"
name          = "redraft"
bucket_prefix = "acme-redraft-123456789012"

endpoint_public_access = true
public_access_cidrs    = ["203.0.113.10/32"]

gpu_node_groups = {
  l40s-spot = {
    instance_types = ["g6e.xlarge", "g6e.2xlarge", "g6e.4xlarge"]
    capacity_type  = "SPOT"
    min_size       = 0
    max_size       = 8
    disk_size_gib  = 300
  }
  l40s = {
    instance_types = ["g6e.xlarge"]
    capacity_type  = "ON_DEMAND"
    min_size       = 0
    max_size       = 2
    disk_size_gib  = 300
  }
}
