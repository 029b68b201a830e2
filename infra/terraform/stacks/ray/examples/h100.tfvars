redraft_image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/redraft:0.1.0"

nightly_schedule   = "30 1 * * *"
schedule_time_zone = "America/New_York"

# One p5.48xlarge (8x H100) for the nightly job; the head runs on the system nodes.
job = {
  gpu_node_group             = "h100"
  workers                    = 1
  gpus_per_worker            = 8
  cpu                        = "180"
  memory                     = "1800Gi"
  shm_size                   = "256Gi"
  active_deadline_seconds    = 72000
  ttl_seconds_after_finished = 900
}

# Serve: one GPU per replica, up to the 8 GPUs of one node, kept warm.
serve = {
  gpu_node_group  = "h100"
  min_workers     = 1
  max_workers     = 8
  gpus_per_worker = 1
  cpu             = "22"
  memory          = "220Gi"
  shm_size        = "32Gi"
}

# Reach the dashboard and API from inside the VPC (VPN) without port-forwarding.
internal_load_balancer = true
