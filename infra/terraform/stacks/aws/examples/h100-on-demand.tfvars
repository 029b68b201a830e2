# H100 cluster: one on-demand p5.48xlarge group (8x H100 80GB per node) that scales to zero between
# nightly runs. p5 capacity is scarce: check your EC2 quota ("Running On-Demand P instances", counted in
# vCPUs: 192 per p5.48xlarge) and consider an EC2 Capacity Block or an On-Demand Capacity Reservation.
region        = "us-east-1"
name          = "redraft"
bucket_prefix = "acme-redraft-123456789012"

# Zones where your account can get p5 capacity (check with:
# aws ec2 describe-instance-type-offerings --location-type availability-zone --filters Name=instance-type,Values=p5.48xlarge)
availability_zones = ["us-east-1a", "us-east-1b", "us-east-1d"]

# Let the addons/ray stacks reach the API from your workstation only.
endpoint_public_access = true
public_access_cidrs    = ["203.0.113.10/32"]

system_node_group = {
  instance_types = ["m6i.2xlarge"]
  min_size       = 2
  desired_size   = 2
  max_size       = 3
}

gpu_node_groups = {
  h100 = {
    instance_types = ["p5.48xlarge"]
    capacity_type  = "ON_DEMAND"
    min_size       = 0
    max_size       = 2
    disk_size_gib  = 1000
  }
}

tags = {
  team = "ml-platform"
}
