# The aws/addons inputs come from aws.auto.tfvars.json and addons.auto.tfvars.json (see the README).
redraft_image = "123456789012.dkr.ecr.us-west-2.amazonaws.com/redraft:0.1.0"

nightly_schedule   = "0 2 * * *"
schedule_time_zone = "Etc/UTC"

# Two spot L40S workers for the batch job, one GPU each.
job = {
  gpu_node_group  = "l40s-spot"
  workers         = 2
  gpus_per_worker = 1
  cpu             = "3"
  memory          = "28Gi"
  shm_size        = "8Gi"
}

# Serve on on-demand L40S; scale to zero when idle (first request after idling waits for a node).
serve = {
  gpu_node_group  = "l40s"
  min_workers     = 0
  max_workers     = 2
  gpus_per_worker = 1
  cpu             = "3"
  memory          = "28Gi"
  shm_size        = "8Gi"
}
