# redraft on the cluster: Serve RayCluster, nightly RayJob schedule, private dashboard access and the
# Prometheus/Grafana wiring. Apply after stacks/aws and stacks/addons.

locals {
  template_vars = {
    corpus      = var.s3_uris.corpus
    outputs     = var.s3_uris.outputs
    checkpoints = var.s3_uris.checkpoints
    models      = var.s3_uris.models
  }

  job_config_path   = abspath(startswith(var.job_config_template, "/") ? var.job_config_template : "${path.module}/${var.job_config_template}")
  serve_config_path = abspath(startswith(var.serve_config_template, "/") ? var.serve_config_template : "${path.module}/${var.serve_config_template}")

  dashboard_path = coalesce(var.grafana_dashboard_path, "${path.module}/../../../../workers/grafana/redraft_dashboard.json")
}

check "gpu_node_groups_exist" {
  assert {
    condition     = contains(var.gpu_node_groups, var.job.gpu_node_group) && contains(var.gpu_node_groups, var.serve.gpu_node_group)
    error_message = "job.gpu_node_group and serve.gpu_node_group must be among the aws stack's GPU node groups (${join(", ", var.gpu_node_groups)}); pods would stay Pending."
  }
}

check "grafana_dashboard" {
  assert {
    condition     = fileexists(local.dashboard_path)
    error_message = "No Grafana dashboard at ${local.dashboard_path}; the redraft dashboard ConfigMap is skipped."
  }
}

module "ray" {
  source = "../../modules/ray"

  namespace             = var.namespace
  redraft_image         = var.redraft_image
  ray_version           = var.ray_version
  aws_region            = var.region
  job_service_account   = var.job_service_account
  job_role_arn          = var.job_role_arn
  serve_service_account = var.serve_service_account
  serve_role_arn        = var.serve_role_arn

  job_config_yaml   = templatefile(local.job_config_path, local.template_vars)
  serve_config_yaml = templatefile(local.serve_config_path, local.template_vars)

  nightly_schedule   = var.nightly_schedule
  schedule_time_zone = var.schedule_time_zone
  nightly_suspended  = var.nightly_suspended
  job                = var.job
  serve              = var.serve

  internal_load_balancer               = var.internal_load_balancer
  internal_load_balancer_source_ranges = coalesce(var.internal_load_balancer_source_ranges, [var.vpc_cidr])

  prometheus_url         = var.prometheus_url
  grafana_url            = var.grafana_url
  enable_pod_monitor     = var.prometheus_url != null
  grafana_dashboard_json = fileexists(local.dashboard_path) ? file(local.dashboard_path) : null
}
