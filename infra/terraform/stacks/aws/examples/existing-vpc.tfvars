# Reuse a VPC you already have: the subnets must be private (NAT egress), span at least two zones and
# carry kubernetes.io/role/internal-elb=1 if you want the internal load balancer option.
region        = "us-east-1"
name          = "redraft"
bucket_prefix = "acme-redraft-123456789012"

existing_vpc = {
  vpc_id             = "vpc-0123456789abcdef0"
  vpc_cidr           = "10.0.0.0/16"
  private_subnet_ids = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1", "subnet-0123456789abcdef2"]
}

gpu_node_groups = {
  l40s = {
    instance_types = ["g6e.xlarge"]
    capacity_type  = "ON_DEMAND"
    min_size       = 0
    max_size       = 4
  }
}
