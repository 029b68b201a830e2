# redraft on KubeRay: the Serve RayCluster, the nightly RayJob schedule, private access to the Ray
# dashboard, and the Prometheus/Grafana wiring. Needs the KubeRay operator and the Prometheus Operator
# CRDs in the cluster first (the `addons` module installs both).

locals {
  labels = merge(var.labels, {
    "app.kubernetes.io/name"       = "redraft"
    "app.kubernetes.io/managed-by" = "terraform"
  })

  job_config_map   = "redraft-job-config"
  serve_config_map = "redraft-serve-config"
}

module "manifests" {
  source = "../ray-manifests"

  namespace             = kubernetes_namespace_v1.this.metadata[0].name
  redraft_image         = var.redraft_image
  image_pull_policy     = var.image_pull_policy
  ray_version           = var.ray_version
  aws_region            = var.aws_region
  job_service_account   = kubernetes_service_account_v1.job.metadata[0].name
  serve_service_account = kubernetes_service_account_v1.serve.metadata[0].name
  job_config_map        = local.job_config_map
  serve_config_map      = local.serve_config_map
  head                  = var.head
  job                   = var.job
  serve                 = var.serve
  prometheus_url        = var.prometheus_url
  grafana_url           = var.grafana_url
  labels                = var.labels
}

resource "kubernetes_namespace_v1" "this" {
  metadata {
    name = var.namespace
    labels = merge(local.labels, {
      # Ray pods need nothing beyond the baseline profile (no host access, no privilege).
      "pod-security.kubernetes.io/enforce" = "baseline"
      "pod-security.kubernetes.io/warn"    = "restricted"
    })
  }
}

################################################################################
# Service accounts bound to the IAM roles of the storage module (IRSA)
################################################################################

resource "kubernetes_service_account_v1" "job" {
  metadata {
    name        = var.job_service_account
    namespace   = kubernetes_namespace_v1.this.metadata[0].name
    labels      = local.labels
    annotations = { "eks.amazonaws.com/role-arn" = var.job_role_arn }
  }
}

resource "kubernetes_service_account_v1" "serve" {
  metadata {
    name        = var.serve_service_account
    namespace   = kubernetes_namespace_v1.this.metadata[0].name
    labels      = local.labels
    annotations = { "eks.amazonaws.com/role-arn" = var.serve_role_arn }
  }
}

################################################################################
# Configs, mounted at /config in the Ray pods
################################################################################

resource "kubernetes_config_map_v1" "job" {
  metadata {
    name      = local.job_config_map
    namespace = kubernetes_namespace_v1.this.metadata[0].name
    labels    = local.labels
  }

  data = {
    "job.yaml" = var.job_config_yaml
  }
}

resource "kubernetes_config_map_v1" "serve" {
  metadata {
    name      = local.serve_config_map
    namespace = kubernetes_namespace_v1.this.metadata[0].name
    labels    = local.labels
  }

  data = {
    "serve.yaml" = var.serve_config_yaml
  }
}

################################################################################
# Serve RayCluster
################################################################################

resource "kubernetes_manifest" "serve_cluster" {
  manifest = module.manifests.serve_ray_cluster

  # The Ray autoscaler changes the worker group's replicas; Terraform must not fight it.
  computed_fields = ["metadata.annotations", "metadata.labels", "spec.workerGroupSpecs[0].replicas"]

  field_manager {
    force_conflicts = true
  }

  depends_on = [kubernetes_config_map_v1.serve]
}

################################################################################
# Nightly job: a CronJob whose pod creates a RayJob from the template below
################################################################################

resource "kubernetes_config_map_v1" "nightly_template" {
  metadata {
    name      = "redraft-nightly-rayjob"
    namespace = kubernetes_namespace_v1.this.metadata[0].name
    labels    = local.labels
  }

  data = {
    "rayjob.yaml" = module.manifests.nightly_ray_job_yaml
  }
}

resource "kubernetes_service_account_v1" "scheduler" {
  metadata {
    name      = "redraft-nightly-scheduler"
    namespace = kubernetes_namespace_v1.this.metadata[0].name
    labels    = local.labels
  }
}

# The scheduler may only create and read RayJobs in this namespace.
resource "kubernetes_role_v1" "scheduler" {
  metadata {
    name      = "redraft-nightly-scheduler"
    namespace = kubernetes_namespace_v1.this.metadata[0].name
    labels    = local.labels
  }

  rule {
    api_groups = ["ray.io"]
    resources  = ["rayjobs"]
    verbs      = ["create", "get", "list"]
  }
}

resource "kubernetes_role_binding_v1" "scheduler" {
  metadata {
    name      = "redraft-nightly-scheduler"
    namespace = kubernetes_namespace_v1.this.metadata[0].name
    labels    = local.labels
  }

  role_ref {
    api_group = "rbac.authorization.k8s.io"
    kind      = "Role"
    name      = kubernetes_role_v1.scheduler.metadata[0].name
  }

  subject {
    kind      = "ServiceAccount"
    name      = kubernetes_service_account_v1.scheduler.metadata[0].name
    namespace = kubernetes_namespace_v1.this.metadata[0].name
  }
}

resource "kubernetes_cron_job_v1" "nightly" {
  metadata {
    name      = "redraft-nightly"
    namespace = kubernetes_namespace_v1.this.metadata[0].name
    labels    = local.labels
  }

  spec {
    schedule                      = var.nightly_schedule
    timezone                      = var.schedule_time_zone
    suspend                       = var.nightly_suspended
    concurrency_policy            = "Forbid"
    starting_deadline_seconds     = 3600
    successful_jobs_history_limit = 3
    failed_jobs_history_limit     = 3

    job_template {
      metadata {
        labels = local.labels
      }

      spec {
        backoff_limit              = 3
        ttl_seconds_after_finished = 86400

        template {
          metadata {
            labels = merge(local.labels, { "app.kubernetes.io/component" = "nightly-scheduler" })
          }

          spec {
            service_account_name            = kubernetes_service_account_v1.scheduler.metadata[0].name
            automount_service_account_token = true # kubectl authenticates with this token.
            restart_policy                  = "Never"
            node_selector                   = { "redraft.dev/pool" = "system" }

            security_context {
              run_as_non_root = true
              run_as_user     = 65532
              run_as_group    = 65532
              seccomp_profile {
                type = "RuntimeDefault"
              }
            }

            container {
              name              = "create-rayjob"
              image             = var.kubectl_image
              image_pull_policy = "Always"
              command           = ["kubectl", "create", "--filename", "/templates/rayjob.yaml"]

              env {
                name  = "HOME"
                value = "/tmp"
              }

              resources {
                requests = { cpu = "50m", memory = "64Mi" }
                limits   = { cpu = "200m", memory = "128Mi" }
              }

              security_context {
                allow_privilege_escalation = false
                privileged                 = false
                read_only_root_filesystem  = true
                run_as_non_root            = true
                run_as_user                = 65532
                capabilities {
                  drop = ["ALL"]
                }
              }

              volume_mount {
                name       = "template"
                mount_path = "/templates"
                read_only  = true
              }

              volume_mount {
                name       = "tmp"
                mount_path = "/tmp"
              }
            }

            volume {
              name = "template"
              config_map {
                name = kubernetes_config_map_v1.nightly_template.metadata[0].name
              }
            }

            volume {
              name = "tmp"
              empty_dir {
                size_limit = "64Mi"
              }
            }
          }
        }
      }
    }
  }

  depends_on = [
    kubernetes_config_map_v1.job,
    kubernetes_role_binding_v1.scheduler,
  ]
}

################################################################################
# Private access: the dashboard has no authentication, so it is never public.
# Default: ClusterIP only (kubectl port-forward). Optionally an internal NLB inside the VPC.
################################################################################

resource "kubernetes_service_v1" "serve_internal" {
  count = var.internal_load_balancer ? 1 : 0

  metadata {
    name      = "${var.serve.name}-internal"
    namespace = kubernetes_namespace_v1.this.metadata[0].name
    labels    = local.labels
    annotations = {
      # In-tree AWS cloud provider and the AWS Load Balancer Controller: internal NLB only.
      "service.beta.kubernetes.io/aws-load-balancer-type"     = "nlb"
      "service.beta.kubernetes.io/aws-load-balancer-internal" = "true"
      "service.beta.kubernetes.io/aws-load-balancer-scheme"   = "internal"
    }
  }

  spec {
    type                        = "LoadBalancer"
    selector                    = module.manifests.serve_head_selector
    load_balancer_source_ranges = var.internal_load_balancer_source_ranges

    port {
      name        = "dashboard"
      port        = module.manifests.ports.dashboard
      target_port = module.manifests.ports.dashboard
    }

    port {
      name        = "serve"
      port        = module.manifests.ports.serve
      target_port = module.manifests.ports.serve
    }
  }

  lifecycle {
    precondition {
      condition     = length(var.internal_load_balancer_source_ranges) > 0
      error_message = "internal_load_balancer = true needs internal_load_balancer_source_ranges."
    }
  }
}

################################################################################
# Monitoring: Prometheus scrapes every Ray node; Grafana loads the redraft dashboard
################################################################################

resource "kubernetes_manifest" "pod_monitor" {
  count = var.enable_pod_monitor ? 1 : 0

  manifest = module.manifests.ray_pod_monitor
}

resource "kubernetes_config_map_v1" "grafana_dashboard" {
  count = var.grafana_dashboard_json == null ? 0 : 1

  metadata {
    name      = "redraft-grafana-dashboard"
    namespace = kubernetes_namespace_v1.this.metadata[0].name
    labels    = merge(local.labels, { (var.grafana_dashboard_label.name) = var.grafana_dashboard_label.value })
  }

  data = {
    "redraft_dashboard.json" = var.grafana_dashboard_json
  }
}
