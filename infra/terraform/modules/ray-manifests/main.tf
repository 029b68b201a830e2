# Renders the KubeRay objects for redraft: the Serve RayCluster, the RayJob that the nightly schedule
# creates, and the PodMonitor that lets Prometheus scrape every Ray node's metrics port.

locals {
  common_labels = merge(var.labels, {
    "app.kubernetes.io/name"       = "redraft"
    "app.kubernetes.io/managed-by" = "terraform"
  })

  # Ray ports. 8080 is where each node exports Ray (and redraft's ray_redraft_*) metrics.
  ports = {
    gcs       = { name = "gcs-server", containerPort = 6379 }
    dashboard = { name = "dashboard", containerPort = 8265 }
    client    = { name = "client", containerPort = 10001 }
    serve     = { name = "serve", containerPort = 8000 }
    metrics   = { name = "metrics", containerPort = 8080 }
  }

  aws_env = [
    { name = "AWS_REGION", value = var.aws_region },
    { name = "AWS_DEFAULT_REGION", value = var.aws_region },
  ]

  # Lets the Ray dashboard draw its metrics charts from the cluster's Prometheus/Grafana.
  dashboard_env = concat(
    var.prometheus_url == null ? [] : [{ name = "RAY_PROMETHEUS_HOST", value = var.prometheus_url }],
    var.grafana_url == null ? [] : [{ name = "RAY_GRAFANA_HOST", value = var.grafana_url }],
  )

  system_node_selector = { "redraft.dev/pool" = "system" }

  gpu_tolerations = [{
    key      = "nvidia.com/gpu"
    operator = "Exists"
    effect   = "NoSchedule"
  }]

  config_mount = { name = "config", mountPath = "/config", readOnly = true }
  shm_mount    = { name = "dshm", mountPath = "/dev/shm" }

  # ulimit as KubeRay would set it; KUBERAY_GEN_RAY_START_CMD is the `ray start ... --block` line KubeRay generates.
  worker_command = ["/bin/bash", "-lc", "--"]
  worker_args    = ["ulimit -n 65536; exec $KUBERAY_GEN_RAY_START_CMD"]

  # Serve head: start Ray, wait until the GCS answers, then run `redraft serve`. If redraft serve fails
  # the container exits (and restarts); if it returns after deploying, the head keeps running Ray.
  serve_head_script = <<-EOT
    ulimit -n 65536
    $KUBERAY_GEN_RAY_START_CMD &
    ray_pid=$!
    until ray health-check --address 127.0.0.1:6379 >/dev/null 2>&1; do
      kill -0 "$ray_pid" 2>/dev/null || exit 1
      sleep 2
    done
    redraft serve /config/serve.yaml || exit $?
    wait "$ray_pid"
  EOT

  head_resources = {
    requests = { cpu = var.head.cpu, memory = var.head.memory }
    limits   = { cpu = var.head.cpu, memory = var.head.memory }
  }

  ################################################################################
  # Nightly RayJob (created from this template by the CronJob in the `ray` module)
  ################################################################################

  job_labels = merge(local.common_labels, { "app.kubernetes.io/component" = "nightly-job" })

  job_worker_resources = {
    requests = { cpu = var.job.cpu, memory = var.job.memory, "nvidia.com/gpu" = tostring(var.job.gpus_per_worker) }
    limits   = { cpu = var.job.cpu, memory = var.job.memory, "nvidia.com/gpu" = tostring(var.job.gpus_per_worker) }
  }

  nightly_ray_job = {
    apiVersion = "ray.io/v1"
    kind       = "RayJob"
    metadata = {
      generateName = var.nightly_job_name_prefix
      namespace    = var.namespace
      labels       = local.job_labels
    }
    spec = {
      entrypoint               = "redraft run /config/job.yaml"
      shutdownAfterJobFinishes = true
      ttlSecondsAfterFinished  = var.job.ttl_seconds_after_finished
      activeDeadlineSeconds    = var.job.active_deadline_seconds
      backoffLimit             = var.job.backoff_limit
      rayClusterSpec = {
        rayVersion              = var.ray_version
        enableInTreeAutoscaling = false
        headGroupSpec = {
          rayStartParams = {
            "num-cpus"            = "0"
            "dashboard-host"      = "0.0.0.0"
            "metrics-export-port" = tostring(local.ports.metrics.containerPort)
          }
          template = {
            metadata = { labels = local.job_labels }
            spec = {
              serviceAccountName = var.job_service_account
              nodeSelector       = local.system_node_selector
              containers = [{
                name            = "ray-head"
                image           = var.redraft_image
                imagePullPolicy = var.image_pull_policy
                env             = concat(local.aws_env, local.dashboard_env)
                ports           = [local.ports.gcs, local.ports.dashboard, local.ports.client, local.ports.metrics]
                resources       = local.head_resources
                volumeMounts    = [local.config_mount]
              }]
              volumes = [{ name = "config", configMap = { name = var.job_config_map } }]
            }
          }
        }
        workerGroupSpecs = [{
          groupName   = "gpu"
          replicas    = var.job.workers
          minReplicas = var.job.workers
          maxReplicas = var.job.workers
          rayStartParams = {
            "metrics-export-port" = tostring(local.ports.metrics.containerPort)
          }
          template = {
            metadata = { labels = local.job_labels }
            spec = {
              serviceAccountName = var.job_service_account
              nodeSelector       = { "redraft.dev/gpu-group" = var.job.gpu_node_group }
              tolerations        = local.gpu_tolerations
              containers = [{
                name            = "ray-worker"
                image           = var.redraft_image
                imagePullPolicy = var.image_pull_policy
                env             = local.aws_env
                ports           = [local.ports.metrics]
                resources       = local.job_worker_resources
                volumeMounts    = [local.config_mount, local.shm_mount]
              }]
              volumes = [
                { name = "config", configMap = { name = var.job_config_map } },
                { name = "dshm", emptyDir = { medium = "Memory", sizeLimit = var.job.shm_size } },
              ]
            }
          }
        }]
      }
    }
  }

  ################################################################################
  # Serve RayCluster
  ################################################################################

  serve_labels = merge(local.common_labels, { "app.kubernetes.io/component" = "serve" })

  serve_worker_resources = {
    requests = { cpu = var.serve.cpu, memory = var.serve.memory, "nvidia.com/gpu" = tostring(var.serve.gpus_per_worker) }
    limits   = { cpu = var.serve.cpu, memory = var.serve.memory, "nvidia.com/gpu" = tostring(var.serve.gpus_per_worker) }
  }

  serve_ray_cluster = {
    apiVersion = "ray.io/v1"
    kind       = "RayCluster"
    metadata = {
      name      = var.serve.name
      namespace = var.namespace
      labels    = local.serve_labels
      annotations = {
        # We supply the container commands (the head also runs `redraft serve`).
        "ray.io/overwrite-container-cmd" = "true"
      }
    }
    spec = {
      rayVersion              = var.ray_version
      enableInTreeAutoscaling = true
      autoscalerOptions = {
        upscalingMode      = "Default"
        idleTimeoutSeconds = var.serve.idle_timeout_seconds
      }
      headGroupSpec = {
        serviceType = "ClusterIP"
        rayStartParams = {
          "num-cpus"            = "0"
          "dashboard-host"      = "0.0.0.0"
          "metrics-export-port" = tostring(local.ports.metrics.containerPort)
        }
        template = {
          metadata = { labels = local.serve_labels }
          spec = {
            serviceAccountName = var.serve_service_account
            nodeSelector       = local.system_node_selector
            containers = [{
              name            = "ray-head"
              image           = var.redraft_image
              imagePullPolicy = var.image_pull_policy
              command         = ["/bin/bash", "-lc", "--"]
              args            = [local.serve_head_script]
              env             = concat(local.aws_env, local.dashboard_env)
              ports           = [local.ports.gcs, local.ports.dashboard, local.ports.client, local.ports.serve, local.ports.metrics]
              resources       = local.head_resources
              volumeMounts    = [local.config_mount]
            }]
            volumes = [{ name = "config", configMap = { name = var.serve_config_map } }]
          }
        }
      }
      workerGroupSpecs = [{
        groupName   = "gpu"
        replicas    = var.serve.min_workers
        minReplicas = var.serve.min_workers
        maxReplicas = var.serve.max_workers
        rayStartParams = {
          "metrics-export-port" = tostring(local.ports.metrics.containerPort)
        }
        template = {
          metadata = { labels = local.serve_labels }
          spec = {
            serviceAccountName = var.serve_service_account
            nodeSelector       = { "redraft.dev/gpu-group" = var.serve.gpu_node_group }
            tolerations        = local.gpu_tolerations
            containers = [{
              name            = "ray-worker"
              image           = var.redraft_image
              imagePullPolicy = var.image_pull_policy
              command         = local.worker_command
              args            = local.worker_args
              env             = local.aws_env
              ports           = [local.ports.serve, local.ports.metrics]
              resources       = local.serve_worker_resources
              volumeMounts    = [local.config_mount, local.shm_mount]
            }]
            volumes = [
              { name = "config", configMap = { name = var.serve_config_map } },
              { name = "dshm", emptyDir = { medium = "Memory", sizeLimit = var.serve.shm_size } },
            ]
          }
        }
      }]
    }
  }

  ################################################################################
  # Prometheus scrape config for every Ray node in the namespace
  ################################################################################

  ray_pod_monitor = {
    apiVersion = "monitoring.coreos.com/v1"
    kind       = "PodMonitor"
    metadata = {
      name      = "redraft-ray-nodes"
      namespace = var.namespace
      labels    = local.common_labels
    }
    spec = {
      selector          = { matchLabels = { "ray.io/is-ray-node" = "yes" } }
      namespaceSelector = { matchNames = [var.namespace] }
      podMetricsEndpoints = [{
        port     = local.ports.metrics.name
        interval = "15s"
        relabelings = [
          # Ray's and redraft's Grafana dashboards filter on these labels.
          { sourceLabels = ["__meta_kubernetes_pod_label_ray_io_cluster"], targetLabel = "ray_io_cluster" },
          { sourceLabels = ["__meta_kubernetes_pod_label_ray_io_node_type"], targetLabel = "ray_io_node_type" },
          { sourceLabels = ["__meta_kubernetes_pod_node_name"], targetLabel = "instance_node" },
        ]
      }]
    }
  }
}
